"""HTML pieces of the release report (`promotion.release_report`): escaped cells,
numbers, tables, sections and notices."""

from __future__ import annotations

from html import escape


def e(value) -> str:
    return escape(str(value))


def num(value) -> str:
    if value is None:
        return "&mdash;"
    if isinstance(value, bool):
        return e(value)
    if isinstance(value, float):
        if value.is_integer():  # a limit such as 250.0 ms reads as 250
            return f"{value:.0f}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return e(value)


def table(headers: list[str], rows: list[list[str]], **attrs: str) -> str:
    """A table of already-escaped cells; a cell starting with '<td' is used as is."""
    opened = " ".join(f'{k.replace("_", "-")}="{e(v)}"' for k, v in attrs.items())
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table {opened}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def verdict(passed) -> str:
    if passed is True:
        return '<td class="result pass">PASS</td>'
    if passed is False:
        return '<td class="result fail">FAIL</td>'
    return '<td class="result unknown">not judged</td>'


def section(anchor: str, title: str, *content: str) -> str:
    return f'<section id="{e(anchor)}">\n<h2>{e(title)}</h2>\n' + "\n".join(content) + "</section>"


def notice(text: str) -> str:
    return f'<p class="notice">{e(text)}</p>'
