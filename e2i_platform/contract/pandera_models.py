"""Pandera DataFrameModels derived from the contract.

One model per table, built from `tables.py` so no column, range or enum is
restated here. Models coerce: the raw `schema` gate asks "can these rows be
typed and do they obey every rule?", and the validated assets store exactly the
typed frame that the gate accepted. Pandera is imported lazily by callers of
`dataframe_model` so the definitions load without it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

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

    Returns a boolean Series; non-digit or wrong-length strings are invalid.
    """
    import numpy as np

    s = values.astype(str)
    width = s.str.len()
    ok = s.str.fullmatch(r"\d+") & (width == width.max())
    if not ok.any():
        return ok
    digits_str = (prefix + s[ok]).to_numpy()
    n = len(digits_str[0])
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
    elif col.dtype == "bool":
        kwargs["isin"] = [True, False]  # names the rows of a non-boolean column, not just its dtype
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
        if col.luhn_prefix is not None:
            namespace[f"_luhn_{col.name}"] = _luhn_check(pa, col)
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
        return luhn_valid(series, col.luhn_prefix or "")

    check.__name__ = f"_luhn_{col.name}"
    return pa.check(col.name, name=f"luhn({col.luhn_prefix})")(check)


def _row_rule(pa, rule):
    def check(cls, df):
        return rule.holds(df)

    check.__name__ = f"_rule_{rule.name}"
    return pa.dataframe_check(name=rule.name)(check)


def validate(name: str, df):
    """Validate lazily and return the coerced frame; raises pandera SchemaErrors."""
    return dataframe_model(name).validate(df, lazy=True)
