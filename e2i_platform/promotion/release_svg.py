"""The figures of the release report (`promotion.release_figures`) as inline SVG: line
charts on the unit square (ROC, precision-recall, calibration) and grouped bars
(ROC-AUC per region).

Plain SVG text, written here: no plotting library to import on the release path, no
external file or font, the same bytes for the same manifest, and a browser draws it
at once. Every label is escaped.
"""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 380, 320
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 34, 48
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _x(value: float) -> float:
    return LEFT + max(0.0, min(1.0, value)) * PLOT_W


def _y(value: float) -> float:
    return TOP + (1.0 - max(0.0, min(1.0, value))) * PLOT_H


def _open(title: str, figure: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" data-figure="{escape(figure)}" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{WIDTH / 2:.1f}" y="20" text-anchor="middle" font-size="14" '
        f'font-weight="bold">{escape(title)}</text>',
    ]


def _axes(xlabel: str, ylabel: str, *, x_ticks: bool = True) -> list[str]:
    out = []
    for t in TICKS:
        y = _y(t)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + PLOT_W}" y2="{y:.1f}" stroke="#e5e5e5"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{t:.1f}</text>'
        )
        if x_ticks:
            x = _x(t)
            out.append(
                f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + PLOT_H}" stroke="#e5e5e5"/>'
            )
            out.append(
                f'<text x="{x:.1f}" y="{TOP + PLOT_H + 16}" text-anchor="middle" '
                f'font-size="11">{t:.1f}</text>'
            )
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" '
        'stroke="#444444"/>'
    )
    out.append(
        f'<text x="{LEFT + PLOT_W / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
        f'font-size="12">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="14" y="{TOP + PLOT_H / 2:.1f}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {TOP + PLOT_H / 2:.1f})">{escape(ylabel)}</text>'
    )
    return out


def _legend(labels: list[str], *, bottom: bool) -> list[str]:
    """Bottom right (ROC, precision-recall: nothing is drawn there) or top left
    (calibration), on a white box so a curve under it does not hide it."""
    x = LEFT + PLOT_W - 150 if bottom else LEFT + 8
    y0 = TOP + PLOT_H - 12 - 16 * (len(labels) - 1) if bottom else TOP + 16
    out = [
        f'<rect x="{x - 4}" y="{y0 - 14}" width="146" height="{16 * len(labels) + 4}" '
        'fill="#ffffff" fill-opacity="0.85" stroke="#cccccc"/>'
    ]
    for i, label in enumerate(labels):
        y = y0 + 16 * i
        color = COLORS[i % len(COLORS)]
        out.append(
            f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{color}" '
            'stroke-width="3"/>'
        )
        out.append(f'<text x="{x + 24}" y="{y}" font-size="11">{escape(label)}</text>')
    return out


def line_chart(
    title: str,
    figure: str,
    series: list[tuple[str, list[float], list[float]]],
    xlabel: str,
    ylabel: str,
    *,
    diagonal: bool = False,
    markers: bool = False,
    legend_bottom: bool = True,
) -> str:
    """Curves on [0, 1] x [0, 1]: `series` is (label, xs, ys) each; `diagonal` draws the
    y = x reference (chance for ROC, perfect calibration)."""
    parts = _open(title, figure) + _axes(xlabel, ylabel)
    if diagonal:
        parts.append(
            f'<line x1="{_x(0)}" y1="{_y(0)}" x2="{_x(1)}" y2="{_y(1)}" stroke="#999999" '
            'stroke-dasharray="4 4"/>'
        )
    for i, (label, xs, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        points = " ".join(f"{_x(x):.1f},{_y(y):.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(
            f'<polyline class="curve" data-series="{escape(label)}" points="{points}" '
            f'fill="none" stroke="{color}" stroke-width="2"/>'
        )
        if markers:
            parts.extend(
                f'<circle cx="{_x(x):.1f}" cy="{_y(y):.1f}" r="3" fill="{color}"/>'
                for x, y in zip(xs, ys, strict=True)
            )
    parts += _legend([label for label, _, _ in series], bottom=legend_bottom)
    parts.append("</svg>")
    return "\n".join(parts)


def bar_chart(
    title: str,
    figure: str,
    categories: list[str],
    series: list[tuple[str, list[float | None]]],
    ylabel: str,
) -> str:
    """Grouped bars on [0, 1], one group per category and one bar per series; a missing
    value (None) is marked "n/a" instead of a bar."""
    parts = _open(title, figure) + _axes("", ylabel, x_ticks=False)
    group = PLOT_W / max(1, len(categories))
    bar = group * 0.8 / max(1, len(series))
    for c, category in enumerate(categories):
        left = LEFT + c * group + group * 0.1
        for s, (label, values) in enumerate(series):
            value, x = values[c], left + s * bar
            if value is None:
                parts.append(
                    f'<text x="{x + bar / 2:.1f}" y="{_y(0) - 4:.1f}" text-anchor="middle" '
                    'font-size="10" fill="#666666">n/a</text>'
                )
                continue
            top = _y(value)
            parts.append(
                f'<rect class="bar" data-series="{escape(label)}" '
                f'data-category="{escape(category)}" x="{x:.1f}" y="{top:.1f}" '
                f'width="{bar - 2:.1f}" height="{_y(0) - top:.1f}" '
                f'fill="{COLORS[s % len(COLORS)]}"><title>{escape(label)} {escape(category)}: '
                f"{value:.4f}</title></rect>"
            )
            parts.append(
                f'<text x="{x + bar / 2 - 1:.1f}" y="{top - 3:.1f}" text-anchor="middle" '
                f'font-size="9">{value:.3f}</text>'
            )
        parts.append(
            f'<text x="{LEFT + (c + 0.5) * group:.1f}" y="{TOP + PLOT_H + 16}" '
            f'text-anchor="middle" font-size="11">{escape(category)}</text>'
        )
    for s, (label, _) in enumerate(series):  # one line under the plot, where no bar is
        x = LEFT + s * 150
        parts.append(
            f'<rect x="{x}" y="{HEIGHT - 19}" width="12" height="10" '
            f'fill="{COLORS[s % len(COLORS)]}"/>'
        )
        parts.append(f'<text x="{x + 16}" y="{HEIGHT - 10}" font-size="11">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
