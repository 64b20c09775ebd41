"""The one way a node reads numbers written as text.

Validation, the typing of rows for the statistics, filters and the inference of a data
model from rows (``DataModel.infer``) all parse text with :func:`parse_numbers`, so they
agree on every value: a bound inferred from a file is exactly the value validation reads
back from it. The parser is Arrow's, which rounds every decimal correctly (17 significant
digits give back the float64 they were written from; pandas' default CSV parser is off by
one unit in the last place on about a quarter of such values). It accepts what Arrow
accepts (``1``, ``-2.5``, ``.5``, ``1e-9``, ``1E+05``; ``inf`` and ``nan``, which callers
treat as not finite) and nothing with surrounding blanks, thousands separators or decimal
commas.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["arrow_text", "parse_numbers"]

#: what may start a number at all; cells that do not are refused without a parse attempt
_NUMBER_START = r"^[+-]?(?:[0-9]|\.[0-9]|inf|nan)"


def arrow_text(series: pd.Series) -> pa.Array | pa.ChunkedArray | None:
    """The column as Arrow text if it holds only text (and missing values), else ``None``.

    Its null mask is exactly ``isna()`` (NaN, None and NA are all null) and, for the object
    columns pandas 2 reads text into, far cheaper to get than ``isna()`` itself.
    """
    if series.dtype != object and not isinstance(series.dtype, pd.StringDtype):
        return None
    try:
        arrow = pa.array(series, from_pandas=True)
    except (pa.ArrowException, ValueError, TypeError):
        return None
    if pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type):
        return arrow
    return None


def _cast(arrow: pa.Array) -> np.ndarray:
    """Arrow's parse of every cell, NaN where a cell is not a number: one cast for a clean
    column, and halving around the bad cells otherwise (a few casts per bad cell)."""
    try:
        return np.asarray(pc.cast(arrow, pa.float64()).to_numpy(zero_copy_only=False),
                          dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(arrow) <= 1:
            return np.full(len(arrow), np.nan)
        middle = len(arrow) // 2
        return np.concatenate([_cast(arrow.slice(0, middle)), _cast(arrow.slice(middle))])


def parse_numbers(series: pd.Series, missing: np.ndarray | None = None,
                  arrow: pa.Array | pa.ChunkedArray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of present cells that are not numbers). ``missing`` marks the
    cells to skip (default: ``isna()``); they read NaN. Booleans are not numbers; numeric
    columns are taken as they are; text is parsed by Arrow (see the module doc)."""
    if missing is None:
        missing = series.isna().to_numpy(dtype=bool)
    if pd.api.types.is_bool_dtype(series.dtype):
        return np.full(len(series), np.nan), ~missing
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(series), bool)
    if arrow is None:
        arrow = arrow_text(series)
    if arrow is None:
        values = _objects(series)
    else:
        if isinstance(arrow, pa.ChunkedArray):
            arrow = arrow.combine_chunks()
        plausible = pc.match_substring_regex(arrow, _NUMBER_START, ignore_case=True)
        values = _cast(pc.if_else(plausible, arrow, pa.scalar(None, arrow.type)))
    values = np.array(values, dtype=np.float64)  # a copy: Arrow's buffers are read-only
    bad = ~missing & np.isnan(values)
    values[missing] = np.nan
    return values, bad


def _objects(series: pd.Series) -> np.ndarray:
    """Values of a column of Python objects: numbers (decimals from SQL included) as they
    are, text through the same parser, anything else (booleans too) NaN."""
    try:
        typed = pa.array(series, from_pandas=True)
    except (pa.ArrowException, ValueError, TypeError):
        typed = None
    if typed is not None and (pa.types.is_decimal(typed.type) or pa.types.is_integer(typed.type)
                              or pa.types.is_floating(typed.type)):
        return np.asarray(pc.cast(typed, pa.float64()).to_numpy(zero_copy_only=False),
                          dtype=np.float64)
    objects = series.to_numpy(dtype=object)
    values = np.full(len(series), np.nan)
    text = np.array([isinstance(v, str) for v in objects], dtype=bool)
    plain = np.array([isinstance(v, int | float | Decimal | np.integer | np.floating)
                      and not isinstance(v, bool | np.bool_) for v in objects], dtype=bool)
    values[plain] = [float(v) for v in objects[plain]]
    if text.any():
        values[text] = parse_numbers(pd.Series(objects[text], dtype=object))[0]
    return values
