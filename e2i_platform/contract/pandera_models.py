"""Pandera DataFrameModels derived from the contract.

One model per table, built from `tables.py` so no column, range or enum is
restated here. Models coerce: the raw `schema` gate asks "can these rows be
typed and do they obey every rule?", and the validated assets store exactly the
typed frame that the gate accepted. Pandera is imported lazily by callers of
`dataframe_model` so the definitions load without it.

Coercion never changes a value. Pandera's own coercion is a plain `astype`, which
truncates 12.5 to 12 in an int column, wraps 1e20 to -2**63, reads an integer as
epoch nanoseconds in a datetime column and reports some unparsable dates without
naming a row. So `validate` first types the int, float and datetime columns
itself (`type_losslessly`, vectorised) and reports every value that cannot be
typed exactly as a `coerce_dtype('<dtype>')` failure of its column and row, with
the raw value; Pandera then sees exactly typed columns (with a stand-in for each
such value, and whatever it reports about a stand-in dropped from the report).

A null in a non-nullable int or bool column is reported as `not_nullable` alone
(typed here too: Pandera would also fail the column's dtype, which cannot hold a
null). A value in a text column that is not text (a number, bytes, a list) is a
`coerce_dtype('string[pyarrow]')` failure of its row, not stringified. A bool
column that holds anything but booleans fails its dtype, and `isin([True, False])`
names each such row (0 and 1 included: they are numbers).

Text (CSV landing files) is parsed strictly: integers from numeric text with an
integral value, floats from numeric text (exactly, as Python's `float` reads it),
datetimes from ISO 8601 text (an offset is converted to naive UTC, as is a
timezone-aware column; "now" and "today", which pandas reads as the clock's time,
are not datetimes). Booleans are not numbers, and numbers are not datetimes.

Beyond coercion: every float column must be finite (`finite`), and, when
`validate` is given the run time, every datetime column not marked `future_ok`
must not be later than now + tolerance (`not_after_now+<tolerance>`).
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import TYPE_CHECKING, Any

from e2i_platform.contract.coercion import type_losslessly
from e2i_platform.contract.tables import Column, Table, table

if TYPE_CHECKING:
    import pandera.pandas as pa

PANDAS_DTYPES = {
    "str": "string[pyarrow]",  # dtype-level check; object strings are checked per element
    "int": "int64",
    "float": "float64",
    "bool": "bool",
    "datetime": "datetime64[ns]",
}


def luhn_valid(values, prefix: str = ""):
    """Vectorised Luhn check of digit strings (with an optional prefix, as NPIs use).

    Returns a boolean Series; non-digit strings are invalid. Each value is judged on
    its own digits, whatever the length of the others (shorter ones are padded with
    leading zeros, which add nothing to a Luhn sum).
    """
    import numpy as np

    s = values.astype(str)
    ok = s.str.fullmatch(r"\d+")
    if not ok.any():
        return ok
    digits_str = prefix + s[ok]
    n = int(digits_str.str.len().max())
    digits_str = digits_str.str.zfill(n).to_numpy()
    digits = np.frombuffer("".join(digits_str).encode(), dtype=np.uint8).reshape(-1, n) - 48
    digits = digits.astype(np.int64)
    # Double every second digit from the right, excluding the check digit.
    doubled = digits[:, -2::-2] * 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = digits[:, -1::-2].sum(axis=1) + doubled.sum(axis=1)
    out = ok.copy()
    out.loc[ok] = total % 10 == 0
    return out


def _field(col: Column):
    import pandera.pandas as pa

    # Coercing text to bool makes every non-empty string True ("False" included), so
    # booleans must arrive as booleans; the landing reader parses true/false text.
    kwargs = {"nullable": col.nullable, "unique": col.unique, "coerce": col.dtype != "bool"}
    if col.allowed is not None:
        kwargs["isin"] = list(col.allowed)
    if col.min is not None:
        kwargs["ge"] = col.min
    if col.max is not None:
        kwargs["le"] = col.max
    if col.pattern is not None:
        kwargs["str_matches"] = col.pattern
    return pa.Field(**kwargs)


@cache
def dataframe_model(name: str) -> type[pa.DataFrameModel]:
    """The Pandera DataFrameModel of a contract table (strict, coercing, lazy-ready)."""
    import pandera.pandas as pa
    from pandera.typing import Series

    spec: Table = table(name)
    namespace: dict = {"__annotations__": {}, "__module__": __name__}
    for col in spec.columns:
        namespace["__annotations__"][col.name] = Series[PANDAS_DTYPES[col.dtype]]
        namespace[col.name] = _field(col)
        if col.dtype == "bool":
            namespace[f"_booleans_{col.name}"] = _booleans_check(pa, col)
        if col.luhn_prefix is not None:
            namespace[f"_luhn_{col.name}"] = _luhn_check(pa, col)
        if col.dtype == "float" and col.finite:
            namespace[f"_finite_{col.name}"] = _finite_check(pa, col)
    for i, rule in enumerate(spec.rules):
        namespace[f"_rule_{i}"] = _row_rule(pa, rule)

    class Config:
        strict = True  # an extra column is a schema failure, not silently carried
        ordered = False

    Config.name = name
    namespace["Config"] = Config
    model_name = "".join(part.title() for part in name.split("_")) + "Model"
    return type(model_name, (pa.DataFrameModel,), namespace)


def _luhn_check(pa, col: Column):
    def check(cls, series):
        valid = luhn_valid(series, col.luhn_prefix or "")
        if col.pattern is None:
            return valid
        # A value that breaks the pattern is the pattern's failure: Luhn judges the rest
        # (matched as Pandera's str_matches does).
        return ~series.str.match(col.pattern, na=False).astype(bool) | valid

    check.__name__ = f"_luhn_{col.name}"
    return pa.check(col.name, name=f"luhn({col.luhn_prefix})")(check)


def _booleans_check(pa, col: Column):
    """Names the rows of a bool column that are not booleans (Pandera's dtype failure
    names none): 0 and 1 too, which `isin([True, False])` would take for booleans."""

    def check(cls, series):
        import numpy as np
        import pandas as pd
        from pandas.api.types import infer_dtype

        kind = series.dtype.kind
        if kind == "b" or isinstance(series.dtype, pd.BooleanDtype):
            return pd.Series(True, index=series.index)
        if kind != "O":  # numbers, times, text dtypes: nothing in it is a boolean
            return pd.Series(False, index=series.index)
        if infer_dtype(series, skipna=True) == "boolean":
            return pd.Series(True, index=series.index)
        raw = series.to_numpy()  # a column that fails its dtype: value by value
        flags = np.fromiter(
            (isinstance(v, bool | np.bool_) for v in raw), dtype=bool, count=len(raw)
        )
        return pd.Series(flags, index=series.index)  # nulls are dropped first (ignore_na)

    check.__name__ = f"_booleans_{col.name}"
    return pa.check(col.name, name="isin", error="isin([True, False])")(check)


def _finite_check(pa, col: Column):
    def check(cls, series):
        import numpy as np
        import pandas as pd

        if series.dtype.kind != "f":  # not typed: the coercion failure says why
            return pd.Series(True, index=series.index)
        return np.isfinite(series)  # nulls are dropped first (ignore_na)

    check.__name__ = f"_finite_{col.name}"
    return pa.check(col.name, name="finite")(check)


def _row_rule(pa, rule):
    def check(cls, df):
        return rule.holds(df)

    check.__name__ = f"_rule_{rule.name}"
    return pa.dataframe_check(name=rule.name)(check)


def coerce_check_name(dtype: str) -> str:
    """The check name of a value that cannot be typed as the contract dtype."""
    return f"coerce_dtype('{PANDAS_DTYPES[dtype]}')"


def future_check_name(tolerance: dt.timedelta) -> str:
    """The check name of a time later than the run time plus `tolerance`."""
    return f"not_after_now+{tolerance}"


def validate(
    name: str,
    df,
    now: dt.datetime | None = None,
    future_tolerance: dt.timedelta | None = None,
):
    """Validate lazily and return the coerced frame; raises pandera SchemaErrors.
    The returned frame shares the columns it did not coerce with `df`.

    `now` (naive UTC, the run time) turns on the rule that no datetime column of
    the past (`future_ok` false) holds a value later than `now + future_tolerance`
    (default zero); without `now` that rule is not applied. Lossless coercion and
    finiteness always apply.
    """
    import pandera.pandas as pa

    spec = table(name)
    typed, lossy, nulls = type_losslessly(spec, df)
    schema = _schema(name, now, future_tolerance)
    try:
        # Pandera copies (and re-consolidates) a frame it may not change. It gets a
        # shallow copy instead, typed here or made here, and replaces the columns it
        # coerces there: the caller's frame is never changed, nor copied whole.
        private = typed if typed is not df else df.copy(deep=False)
        validated = schema.validate(private, lazy=True, inplace=True)
    except pa.errors.SchemaErrors as exc:
        if not lossy and not nulls:
            raise
        raise _with_coercion_failures(schema, spec, df, lossy, nulls, exc.schema_errors) from None
    if lossy or nulls:
        raise _with_coercion_failures(schema, spec, df, lossy, nulls, [])
    return validated


def _schema(name: str, now: dt.datetime | None, tolerance: dt.timedelta | None):
    """The table's schema, plus the not-in-the-future check when the run time is given."""
    schema = dataframe_model(name).to_schema()
    if now is None:
        return schema
    import pandas as pd
    import pandera.pandas as pa

    tolerance = pd.Timedelta(tolerance or 0).to_pytimedelta()
    limit = pd.Timestamp(now)
    if limit.tzinfo is not None:
        limit = limit.tz_convert("UTC").tz_localize(None)
    limit = limit + tolerance
    check_name = future_check_name(tolerance)
    updates = {
        col.name: {
            "checks": [
                *schema.columns[col.name].checks,
                pa.Check(lambda s: s <= limit, name=check_name, ignore_na=True),
            ]
        }
        for col in table(name).columns
        if col.dtype == "datetime" and not col.future_ok and col.name in schema.columns
    }
    return schema.update_columns(updates) if updates else schema


def _with_coercion_failures(
    schema, spec: Table, data, lossy: dict[str, Any], nulls: dict[str, Any], errors: list
):
    """One SchemaErrors: the values that cannot be typed and the nulls of int and bool
    columns (`type_losslessly`), plus Pandera's other failures.

    A failure Pandera reports on a stand-in (for a value that cannot be typed or such
    a null: a row rule, or the null, dtype and range failures of a null stand-in) is a
    consequence of the failure already reported for that cell, so it is dropped.
    """
    import numpy as np
    import pandas as pd
    import pandera.pandas as pa
    from pandera.errors import SchemaError, SchemaErrorReason

    bad_rows = {col: pd.Index(cases["index"]) for col, cases in lossy.items()}
    for col, rows in nulls.items():
        bad_rows[col] = bad_rows[col].append(rows) if col in bad_rows else rows
    rule_columns = {r.name: r.columns for r in spec.rules}
    kept = []
    for err in errors:
        fc = err.failure_cases
        check = getattr(err.check, "name", err.check)
        if isinstance(fc, pd.DataFrame) and "index" in fc.columns:
            if check in rule_columns:
                concerned = [c for c in rule_columns[check] if c in bad_rows]
                drop = pd.Series(False, index=fc.index)
                for c in concerned:
                    drop |= fc["index"].isin(bad_rows[c])
            elif "column" in fc.columns:
                drop = pd.Series(False, index=fc.index)
                for c, rows in bad_rows.items():
                    drop |= (fc["column"] == c) & fc["index"].isin(rows)
            else:
                col = err.column_name if err.column_name is not None else err.schema.name
                drop = fc["index"].isin(bad_rows[col]) if col in bad_rows else None
            if drop is not None and drop.any():
                if drop.all():
                    continue
                err.failure_cases = fc[~drop.to_numpy()].reset_index(drop=True)
        else:
            col = err.column_name if err.column_name is not None else err.schema.name
            if col in bad_rows and err.reason_code in (
                SchemaErrorReason.WRONG_DATATYPE,
                SchemaErrorReason.DATATYPE_COERCION,
                SchemaErrorReason.CHECK_ERROR,
            ):
                continue
        kept.append(err)
    mine = []
    for col, cases in lossy.items():
        dtype = spec.column(col).dtype
        mine.append(
            SchemaError(
                schema.columns[col],
                data,
                f"{len(cases)} value(s) of column {col!r} cannot be typed as "
                f"{PANDAS_DTYPES[dtype]} without changing them",
                failure_cases=cases,
                check=coerce_check_name(dtype),
                reason_code=SchemaErrorReason.DATATYPE_COERCION,
                column_name=col,
            )
        )
    for col, rows in nulls.items():
        mine.append(
            SchemaError(
                schema.columns[col],
                data,
                f"{len(rows)} null value(s) in non-nullable column {col!r}",
                failure_cases=pd.DataFrame({"index": rows, "failure_case": np.nan}),
                check="not_nullable",
                reason_code=SchemaErrorReason.SERIES_CONTAINS_NULLS,
                column_name=col,
            )
        )
    return pa.errors.SchemaErrors(schema, mine + kept, data)
