"""Typing raw values without changing any: the contract's int, float, datetime, text
and bool columns typed from text or loose dtypes, every value that cannot be typed
exactly returned as a failure (see `contract.pandera_models`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from e2i_platform.contract.tables import Column, Table

if TYPE_CHECKING:
    import pandas as pd


_INT64_MAX = 2**63 - 1
_EXACT_INT_IN_FLOAT = 2**53  # beyond this a float cannot represent every integer


def type_losslessly(spec: Table, df) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Type the int, float, datetime, text and bool columns of `df` without changing
    any value.

    Returns the frame to hand to Pandera (the input itself when nothing needed
    typing); per column with values that cannot be typed exactly, a frame of failure
    cases (`index`, `failure_case` = the raw value); and per non-nullable int or bool
    column with nulls, the index of those rows (an int64 or bool column cannot hold a
    null, so Pandera would report the column's dtype too). In the returned frame such
    values are stand-ins (`_stand_in`), the rest of the column exactly typed.
    Vectorised: Python runs value by value only on what the vectorised parse leaves
    undecided (text that is not a plain number: usually just the failing values) and
    on object columns that mix Python types (never the case for a landing file).
    """
    import pandas as pd

    typed = None
    lossy: dict[str, Any] = {}
    nulls: dict[str, Any] = {}
    for col in spec.columns:
        if col.name not in df.columns or col.dtype not in _TYPERS:
            continue
        raw = df[col.name]
        if not isinstance(raw, pd.Series):  # duplicated labels: Pandera reports them
            continue
        values, bad = _TYPERS[col.dtype](raw)
        null = _reported_nulls(col, values, bad)
        if values is raw and bad is None and null is None:
            continue
        replaced = None
        if bad is not None and bad.any():
            lossy[col.name] = pd.DataFrame(
                {"index": raw.index[bad], "failure_case": raw[bad].astype(object).to_numpy()}
            )
            replaced = bad
        if null is not None:
            nulls[col.name] = raw.index[null]
            replaced = null if replaced is None else replaced | null
        if replaced is not None:
            values = _stand_in(col, values, replaced)
        if typed is None:
            typed = df.copy(deep=False)
        typed[col.name] = values
    return (df if typed is None else typed), lossy, nulls


def _reported_nulls(col: Column, values: pd.Series, bad):
    """The nulls of a non-nullable int or bool column (a mask), if any: typed columns
    of those dtypes cannot hold them, so they are reported here and stood in for."""
    import numpy as np

    if col.dtype not in ("int", "bool") or col.nullable or col.unique:
        return None
    if values.dtype in (np.int64, np.bool_):
        return None
    null = values.isna().to_numpy()
    if bad is not None:
        null &= ~bad
    return null if null.any() else None


def _stand_in(col: Column, values: pd.Series, bad):
    """Put a value that satisfies the column's own checks where a value cannot be typed
    (or is a null the column's dtype cannot hold).

    Pandera then has nothing to say about those cells (a null there would make it
    build a null failure per cell, slowly, only for the report to drop it); what it
    still says about them (a row rule) is dropped by `_with_coercion_failures`. The
    frame never leaves `validate`: a coercion failure always raises.
    """
    import math

    import numpy as np
    import pandas as pd

    if col.unique:  # a stand-in could duplicate a real value: leave the null
        return values.where(~bad)
    if col.dtype == "datetime":
        stand_in: Any = pd.Timestamp("1970-01-01")
    elif col.allowed:
        stand_in = col.allowed[0]
    elif col.dtype == "bool":
        stand_in = False
    elif col.dtype == "str":
        stand_in = ""
    elif col.min is not None:
        stand_in = math.ceil(col.min) if col.dtype == "int" else col.min
    elif col.max is not None:
        stand_in = math.floor(col.max) if col.dtype == "int" else col.max
    else:
        stand_in = 0
    values = values.where(~bad, stand_in)
    if col.dtype == "int" and not values.isna().any():
        values = values.astype(np.int64)
    elif col.dtype == "bool" and not values.isna().any():
        values = values.astype(bool)
    elif col.dtype == "float":
        values = values.astype(np.float64)
    return values


def _inferred(s: pd.Series) -> str:
    """What an object column holds: pandas' C-level type inference."""
    from pandas.api.types import infer_dtype

    return infer_dtype(s, skipna=True)


def _as_object(s: pd.Series) -> pd.Series:
    """Object values with NaN for missing (string and categorical dtypes included)."""
    import numpy as np
    import pandas as pd

    return pd.Series(s.to_numpy(dtype=object, na_value=np.nan), index=s.index, name=s.name)


def _python_kind_mask(s: pd.Series, kinds: tuple[type, ...]):
    """Element-wise isinstance: only for object columns that mix Python types."""
    import numpy as np

    return np.fromiter((isinstance(v, kinds) for v in s.to_numpy()), dtype=bool, count=len(s))


def _is_number(v) -> bool:
    import numpy as np

    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _resolve_int(v) -> int | None:
    """One value the vectorised parse left undecided: its exact integer, or None."""
    import math
    from decimal import Decimal

    import numpy as np

    if isinstance(v, str):
        try:
            n = int(v)
        except ValueError:
            try:
                f = float(v)
            except ValueError:
                return None
            if not (math.isfinite(f) and f.is_integer() and abs(f) <= _EXACT_INT_IN_FLOAT):
                return None
            n = int(f)
    elif isinstance(v, Decimal):
        if not (v.is_finite() and v == v.to_integral_value()):
            return None
        n = int(v)
    elif _is_number(v):
        if isinstance(v, int | np.integer):
            n = int(v)
        else:
            f = float(v)
            if not (math.isfinite(f) and f.is_integer()):
                return None
            n = int(f)
    else:
        return None
    return n if -(2**63) <= n <= _INT64_MAX else None


def _resolve_float(v) -> float | None:
    """One value the vectorised parse left undecided: its float, or None."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    if _is_number(v):
        try:
            f = float(v)
        except OverflowError:
            return None
        return f if not isinstance(v, int) or int(f) == v else None
    return None


# What Python's float() reads besides digits, signs, points, exponents and spaces.
_NUMBER_WORDS = ("nan", "inf", "infinity")
_NOT_NUMBER_CHARS = r"[^\s0-9+\-._eE]"


def _certainly_not_number_text(obj: pd.Series, candidates):
    """Of the `candidates` (text pandas could not parse), those that Python's float()
    rejects too, found vectorised (Arrow regex): any character no number is written
    with, other than the words nan/inf/infinity. The rest are resolved value by value,
    so a column of garbage costs no Python per row."""
    import numpy as np
    import pandas as pd

    out = np.zeros(len(obj), dtype=bool)
    if not candidates.any():
        return out
    text = pd.Series(obj.to_numpy()[candidates]).astype("string[pyarrow]")
    words = text.str.strip().str.lower().str.lstrip("+-").isin(_NUMBER_WORDS)
    foreign = text.str.contains(_NOT_NUMBER_CHARS, regex=True) & ~words
    out[np.flatnonzero(candidates)] = foreign.fillna(True).to_numpy(dtype=bool)
    return out


def _int_column(s: pd.Series, values, bad, null):
    """The int64 column, or nullable Int64 with a null where a value is bad (see
    `_stand_in`) or null: never through float64, which would round or wrap wide ints."""
    import numpy as np
    import pandas as pd

    if not bad.any() and not null.any():
        return pd.Series(values.astype(np.int64), index=s.index, name=s.name), bad
    out = pd.arrays.IntegerArray(values.astype(np.int64), bad | null)
    return pd.Series(out, index=s.index, name=s.name), bad


def _to_int(s: pd.Series):
    """int64 values and the mask of values that are not integers within int64."""
    import numpy as np
    import pandas as pd

    if s.dtype == np.int64:
        return s, None
    n = len(s)
    kind = s.dtype.kind
    if kind in "iu":
        v = s.to_numpy()
        bad = v > _INT64_MAX if kind == "u" else np.zeros(n, dtype=bool)
        return _int_column(s, np.where(bad, 0, v), bad, np.zeros(n, dtype=bool))
    obj = s if kind in "fO" else _as_object(s)
    what = "floating" if kind == "f" else "" if kind in "bmM" else _inferred(obj)
    if kind in "bmM" or what == "boolean":  # flags and times are not numbers
        bad = s.notna().to_numpy()
        return _int_column(s, np.zeros(n, dtype=np.int64), bad, ~bad)
    if what in ("string", "integer"):
        try:  # Python's int() per value: exact, and raises on anything else
            return obj.astype(np.int64), None
        except (TypeError, ValueError, OverflowError):
            pass
    null = obj.isna().to_numpy()
    values = np.zeros(n, dtype=np.int64)
    if what in ("string", "floating", "mixed-integer-float", "decimal"):
        if what == "string":
            v = pd.to_numeric(obj, errors="coerce").to_numpy(dtype=np.float64)
            exact = 1e15  # pandas' fast parser reads integers of up to 15 digits exactly
        else:
            v = obj.to_numpy(dtype=np.float64)
            # Floats are what they are; ints or decimals beside them are not exact as a
            # float beyond 2**53 (2**63 - 1 would read as 2**63): those are read below.
            exact = 2**63 if what == "floating" else _EXACT_INT_IN_FLOAT
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(v) & (np.floor(v) == v)
            ok = ~null & integral & (np.abs(v) < exact)
        values[ok] = v[ok].astype(np.int64)
        if what == "floating":  # typed floats: what is not integral within range is bad
            return _int_column(s, values, ~null & ~ok, null)
        if what == "string":
            # Text: a fraction or an infinity is bad as parsed; large integers are read
            # exactly below; text pandas cannot parse is screened (vectorised) first.
            parsed = ~np.isnan(v)
            bad = ~null & parsed & ~integral
            unparsed = ~null & ~parsed
            bad |= _certainly_not_number_text(obj, unparsed)
            undecided = (unparsed & ~bad) | (~null & integral & ~ok)
        else:  # ints, floats or decimals together: a fraction or infinity is bad
            bad = ~null & ~integral
            undecided = ~null & integral & ~ok
    else:  # objects of mixed Python types: value by value
        bad = np.zeros(n, dtype=bool)
        undecided = ~null
    for i, r in _resolve_each(obj, undecided, _resolve_int, bad).items():
        values[i] = r
    return _int_column(s, values, bad, null)


def _resolve_each(obj: pd.Series, undecided, resolve, bad) -> dict[int, Any]:
    """Python's own parse of the values the vectorised one could not settle: {row: value};
    a value it cannot parse either is marked in `bad`."""
    import numpy as np

    raw = obj.to_numpy()
    resolved = {}
    for i in np.flatnonzero(undecided):
        r = resolve(raw[i])
        if r is None:
            bad[i] = True
        else:
            resolved[i] = r
    return resolved


def _to_float(s: pd.Series):
    """float64 values (exactly as written) and the mask of values that are not numbers."""
    import numpy as np
    import pandas as pd

    if s.dtype == np.float64:
        return s, None
    n = len(s)
    kind = s.dtype.kind
    if kind == "f":
        return s.astype(np.float64), None
    if kind in "iu":
        v = s.to_numpy()
        f = v.astype(np.float64)
        bad = np.zeros(n, dtype=bool)
        big = np.abs(f) >= _EXACT_INT_IN_FLOAT
        if big.any():  # rare: compare exactly, in Python integers
            kept = [int(x) == int(float(x)) for x in v[big].tolist()]
            bad[np.flatnonzero(big)] = ~np.array(kept, dtype=bool)
        f[bad] = np.nan
        return pd.Series(f, index=s.index, name=s.name), bad
    obj = s if kind == "O" else _as_object(s)
    what = "" if kind in "bmM" else _inferred(obj)
    if kind in "bmM" or what == "boolean":  # flags and times are not numbers
        bad = s.notna().to_numpy()
        return pd.Series(np.nan, index=s.index, name=s.name), bad
    if what in ("string", "floating", "integer", "mixed-integer-float", "decimal", "empty"):
        try:  # Python's float() per value: exact (pandas' fast parser may round)
            return obj.astype(np.float64), None
        except (TypeError, ValueError, OverflowError):
            pass
    null = obj.isna().to_numpy()
    bad = np.zeros(n, dtype=bool)
    if what == "string":
        undecided = ~null & pd.to_numeric(obj, errors="coerce").isna().to_numpy()
        bad = _certainly_not_number_text(obj, undecided)
        undecided &= ~bad
    else:  # objects of mixed Python types: value by value
        undecided = ~null
    resolved = _resolve_each(obj, undecided, _resolve_float, bad)
    decided = obj.where(~undecided, np.nan)
    try:
        values = decided.astype(np.float64).to_numpy()
    except (TypeError, ValueError, OverflowError):
        values = pd.to_numeric(decided, errors="coerce").to_numpy(dtype=np.float64)
    for i, r in resolved.items():
        values[i] = r
    values[bad] = np.nan
    return pd.Series(values, index=s.index, name=s.name), bad


def _to_datetime(s: pd.Series):
    """Naive-UTC datetime64[ns] values and the mask of values that are not datetimes."""
    import numpy as np
    import pandas as pd

    dtype = s.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        dtype = s.dtype
    if dtype == "datetime64[ns]":
        return s, None
    if dtype.kind == "M":  # another unit: values outside the nanosecond range cannot be typed
        bad = ((s < pd.Timestamp.min) | (s > pd.Timestamp.max)).to_numpy()
        return s.where(~bad).astype("datetime64[ns]"), bad
    if dtype.kind in "biufm":  # numbers are not datetimes (an epoch in which unit?)
        bad = s.notna().to_numpy()
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]"), bad
    obj = _as_object(s) if dtype.kind != "O" else s
    what = _inferred(obj)
    not_datetime = np.zeros(len(s), dtype=bool)
    if what in ("integer", "floating", "mixed-integer-float", "decimal", "boolean"):
        not_datetime = obj.notna().to_numpy()
    elif what not in ("string", "datetime", "datetime64", "date", "empty"):
        not_datetime = _python_kind_mask(obj, (bool, int, float, np.number, dt.timedelta))
    if not_datetime.any():
        obj = obj.where(~not_datetime)
    parsed = pd.to_datetime(obj, errors="coerce", format="ISO8601", utc=True)
    parsed = parsed.dt.tz_localize(None).astype("datetime64[ns]")
    unparsed = parsed.isna().to_numpy()
    # pandas reads these words as the clock's time when parsed: not a recorded time
    unparsed |= obj.isin(_CLOCK_WORDS).to_numpy()
    if unparsed.any():
        unparsed &= obj.notna().to_numpy()
        # pandas' own spellings of a missing time are nulls, not failures
        unparsed[unparsed] = ~obj[unparsed].isin(_NULL_TIME_TEXT).to_numpy()
    return parsed, not_datetime | unparsed


def _to_str(s: pd.Series):
    """The text column as it is (Pandera types it) and the mask of values that are not
    text: a number, bytes or a list would otherwise be stringified silently."""
    import pandas as pd

    if isinstance(s.dtype, pd.StringDtype):
        return s, None
    obj = s if s.dtype.kind == "O" else _as_object(s)
    if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype.kind == "O":
        if _inferred(obj) in ("string", "empty"):
            return s, None
        bad = obj.notna().to_numpy() & ~_python_kind_mask(obj, (str,))
    else:  # numbers, flags and times are not text
        bad = obj.notna().to_numpy()
    return obj, (bad if bad.any() else None)


def _to_bool(s: pd.Series):
    """Booleans as bool (with their nulls, as objects, when there are any), or the
    column as it is when it holds anything else: then Pandera reports its dtype and
    the model's check names the rows of the values that are not booleans."""
    import numpy as np
    import pandas as pd

    if s.dtype == np.bool_:
        return s, None
    booleans = isinstance(s.dtype, pd.BooleanDtype) or (
        s.dtype.kind == "O" and _inferred(s) in ("boolean", "empty")
    )
    if not booleans:
        return s, None
    if s.isna().any():
        return _as_object(s), None
    return s.astype(bool), None


_NULL_TIME_TEXT = ("", "NaT", "nat", "NAT", "NaN", "nan", "NAN")
_CLOCK_WORDS = ("now", "today")
_TYPERS = {
    "int": _to_int,
    "float": _to_float,
    "datetime": _to_datetime,
    "str": _to_str,
    "bool": _to_bool,
}
