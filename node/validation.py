"""Checking a node's rows against its data model before it serves any query.

A node refuses to serve data that contradicts its declared model: the model's bounds and
categories are the sensitivity of every noisy answer, so a value outside them would break
the privacy guarantee, not only the statistics. Checks are vectorised per column (pandas /
pyarrow) so that 100k rows x 170 columns take well under a second or two.

Conventions:

- rows are numbered 1-based in the order of the frame: row 1 is the first data row (in a
  CSV, the line after the header when the file has no blank lines);
- missing values (NaN/None/NA, empty or blank text) are allowed everywhere except in the
  ``dataset`` column; they are counted as missing by the statistics. Missing values are
  always found with ``isna()`` masks, never by turning values into text: pandas 2 turns NaN
  into the text ``'nan'`` under ``astype(str)`` while pandas 3's ``str`` dtype keeps it
  missing, and this module must behave the same under both;
- columns the model does not know are ignored by the statistics and reported as
  *warnings* (they are often a misspelt header, after which the real variable looks
  entirely missing); with ``strict=True`` they are errors. Variables of the model that the
  data lacks are fine (all missing at this node).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from node.datamodel import DATASET, DataModel, LocalDataError, Variable
from node.numbers import arrow_text, parse_numbers

__all__ = [
    "Problem",
    "ValidationFailed",
    "as_codes",
    "as_numbers",
    "check_valid",
    "coerce",
    "missing_mask",
    "validate",
]

Severity = Literal["error", "warning"]
_SHOWN = 20
_MAX_VALUE_CHARS = 40


@dataclass(frozen=True)
class Problem:
    """One finding: ``row`` is 1-based (row 1 = first data row), ``None`` for a whole column."""

    row: int | None
    column: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"column {self.column!r}"
        if self.row is not None:
            where = f"row {self.row}, {where}"
        tag = "" if self.severity == "error" else " (warning)"
        return f"{where}: {self.message}{tag}"


class ValidationFailed(LocalDataError):
    """The rows contradict the data model; ``problems`` holds the first ones, ``total`` all."""

    def __init__(self, message: str, problems: list[Problem], total: int) -> None:
        super().__init__(message)
        self.problems = problems
        self.total = total


def validate(
    df: pd.DataFrame, model: DataModel, *, strict: bool = False, limit: int | None = None
) -> list[Problem]:
    """Every problem (or the first ``limit``): whole-column ones first, then by row."""
    problems, _ = _scan(df, model, strict, limit)
    return problems


def check_valid(df: pd.DataFrame, model: DataModel, *, strict: bool = False) -> None:
    """Raise :class:`ValidationFailed` listing the first 20 errors and their total count.

    Warnings alone do not fail; the message and ``problems`` then hold only errors.
    """
    problems, total = _scan(df, model, strict, _SHOWN, errors_only=True)
    if total == 0:
        return
    lines = [f"{total} problem(s) in the data for model {model.name}:"]
    lines += [f"  {p}" for p in problems]
    if total > len(problems):
        lines.append(f"  ... and {total - len(problems)} more")
    raise ValidationFailed("\n".join(lines), problems, total)


def coerce(df: pd.DataFrame, model: DataModel) -> pd.DataFrame:
    """The model's columns, typed for the statistics code (call :func:`check_valid` first).

    Columns come in the model's order (variables the data lacks are left out, unknown
    columns dropped): ``real`` as float64, ``int`` as nullable ``Int64``, categorical and
    other text as pandas ``str`` with NaN for missing; categorical codes are normalised the
    way validation compares them (a numeric 1.0 becomes the code ``"1"``). Raises
    :class:`LocalDataError` when a value cannot be converted.
    """
    out: dict[str, pd.Series] = {}
    for code, var in model.variables.items():
        if code not in df.columns:
            continue
        series = df[code]
        na = series.isna().to_numpy(dtype=bool)
        if var.is_numeric:
            values, bad = parse_numbers(series, na)
            missing = na | _blank_among(series, bad)
            bad &= ~missing
            bad |= np.isinf(values)
            if var.sql_type == "int":
                bad |= np.isfinite(values) & (values != np.round(values))
            if bad.any():
                raise LocalDataError(
                    f"column {code!r} holds values that are not valid numbers; "
                    "validate the data before using it"
                )
            values = np.where(missing, np.nan, values)
            if var.sql_type == "int":
                out[code] = pd.Series(values, index=df.index).astype("Int64")
            else:
                out[code] = pd.Series(values, index=df.index, dtype="float64")
        else:
            codes = as_codes(series)
            if var.is_categorical:
                unknown = ~na & ~codes.isin(var.enumerations).to_numpy(dtype=bool)
                missing = na | _blank_among(series, unknown)
            else:
                missing = missing_mask(series)
            out[code] = _text_series(codes, missing)
    return pd.DataFrame(out, index=df.index)


def _text_dtype() -> Any:
    """The dtype :func:`coerce` gives text: pandas' ``str`` where it keeps NaN missing
    (pandas 3, or pandas 2 with ``future.infer_string``), plain ``object`` otherwise (pandas
    2's ``str`` alias would turn NaN into the text ``'nan'``)."""
    probe = pd.Series([np.nan], dtype=object).astype("str")
    return "str" if bool(probe.isna().all()) else object


def _text_series(codes: pd.Series, missing: np.ndarray) -> pd.Series:
    """Text codes with NaN where ``missing`` (or already NA), in :func:`_text_dtype`."""
    values = codes.to_numpy(dtype=object, na_value=np.nan, copy=True)
    values[missing] = np.nan
    return pd.Series(values, index=codes.index, dtype=_text_dtype())


# --- scanning -----------------------------------------------------------------------------


@dataclass
class _Finding:
    """Rows (positional mask) of one column that fail one check, and how to word each."""

    position: int
    column: str
    mask: np.ndarray
    describe: Callable[[int], str]


def _scan(
    df: pd.DataFrame,
    model: DataModel,
    strict: bool,
    limit: int | None,
    errors_only: bool = False,
) -> tuple[list[Problem], int]:
    column_problems: list[Problem] = []
    findings: list[_Finding] = []
    if DATASET not in model.variables:
        column_problems.append(
            Problem(None, DATASET, f"data model {model.name} has no dataset variable")
        )
    if DATASET not in df.columns:
        column_problems.append(
            Problem(None, DATASET, "the data has no dataset column (give the source a dataset)")
        )
    for position, name in enumerate(df.columns):
        column = str(name)
        var = model.variables.get(column)
        if var is None:
            severity: Severity = "error" if strict else "warning"
            if not (errors_only and severity == "warning"):
                column_problems.append(
                    Problem(None, column, f"not a variable of data model {model.name}", severity)
                )
            continue
        series = df[name]
        if isinstance(series, pd.DataFrame):
            column_problems.append(Problem(None, column, "the column appears more than once"))
            continue
        findings.extend(_check_column(position, column, series, var))

    total = len(column_problems) + sum(int(f.mask.sum()) for f in findings)
    cap = total if limit is None else limit
    problems = column_problems[:cap]
    candidates: list[tuple[int, int, int, _Finding]] = []
    for order, finding in enumerate(findings):
        for index in np.flatnonzero(finding.mask)[: cap - len(problems)]:
            candidates.append((int(index), finding.position, order, finding))
    candidates.sort(key=lambda c: c[:3])
    for index, _, _, finding in candidates[: cap - len(problems)]:
        problems.append(Problem(index + 1, finding.column, finding.describe(index)))
    return problems, total


def _check_column(position: int, column: str, series: pd.Series, var: Variable) -> list[_Finding]:
    cache: list[np.ndarray] = []

    def value(i: int) -> str:
        if not cache:
            cache.append(series.to_numpy(dtype=object))
        text = repr(cache[0][i])
        return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."

    found: list[_Finding] = []

    def add(mask: np.ndarray, describe: Callable[[int], str]) -> None:
        if mask.any():
            found.append(_Finding(position, column, mask, describe))

    arrow = arrow_text(series)
    if arrow is not None:
        na = np.asarray(arrow.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    else:
        na = series.isna().to_numpy(dtype=bool)
    if column == DATASET:
        add(missing_mask(series), lambda i: "the row has no dataset")
    if var.is_categorical:
        if arrow is not None:  # all text: the codes are the values themselves
            enums = pa.array(var.enumerations, type=arrow.type)
            allowed = np.asarray(
                pc.is_in(arrow, value_set=enums).to_numpy(zero_copy_only=False), dtype=bool
            )
        else:
            allowed = as_codes(series).isin(var.enumerations).to_numpy(dtype=bool)
        shown = ", ".join(repr(c) for c in var.enumerations[:6])
        more = ", ..." if len(var.enumerations) > 6 else ""
        bad = ~na & ~allowed
        bad &= ~_blank_among(series, bad)
        add(bad, lambda i: f"value {value(i)} is not a code of ({shown}{more})")
    elif var.is_numeric:
        values, bad = parse_numbers(series, na, arrow)
        blank = _blank_among(series, bad)
        bad &= ~blank
        add(bad, lambda i: f"value {value(i)} is not a number")
        add(np.isinf(values), lambda i: f"value {value(i)} is not finite")
        finite = np.isfinite(values)
        if var.sql_type == "int":
            fraction = finite & (values != np.round(values))
            add(fraction, lambda i: f"value {value(i)} is not an integer")
        if var.min is not None:
            low = var.min
            add(finite & (values < low), lambda i: f"value {value(i)} is below the minimum {low:g}")
        if var.max is not None:
            high = var.max
            add(finite & (values > high), lambda i: f"value {value(i)} is above the maximum {high:g}")
    return found


# --- column helpers -----------------------------------------------------------------------


def _blank_among(series: pd.Series, mask: np.ndarray) -> np.ndarray:
    """Which of the rows selected by ``mask`` hold empty or blank text (cheap: few rows)."""
    out = np.zeros(len(series), dtype=bool)
    index = np.flatnonzero(mask)
    if len(index):
        chosen = series.iloc[index].to_numpy(dtype=object)
        out[index] = [isinstance(v, str) and not v.strip() for v in chosen]
    return out


def missing_mask(series: pd.Series) -> np.ndarray:
    """Rows that are missing: NA values, and empty or blank text ('' may mean unknown)."""
    missing: np.ndarray = np.asarray(series.isna(), dtype=bool)
    if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        return missing
    if not isinstance(series.dtype, pd.StringDtype) and not _all_text(series):
        # mixed objects (or categories): only real strings can be blank; the others are
        # left out here rather than stringified (pandas 2 would make NaN the text 'nan')
        values = series.to_numpy(dtype=object, na_value=None)
        index = np.flatnonzero([isinstance(v, str) for v in values])
        if not len(index):
            return missing
        series = pd.Series(values[index], dtype=object)
        blank = np.zeros(len(missing), dtype=bool)
        blank[index] = series.str.strip().eq("").to_numpy(dtype=bool, na_value=False)
        return np.asarray(missing | blank, dtype=bool)
    blank = series.str.strip().eq("").to_numpy(dtype=bool, na_value=False)
    return np.asarray(missing | blank, dtype=bool)


def _all_text(series: pd.Series) -> bool:
    """Every present value is a ``str`` (also true when all are missing); fast, in C."""
    if series.dtype != object:
        return False
    return pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")


def as_numbers(series: pd.Series) -> np.ndarray:
    """Values as float64, NaN where missing or not a number (text is parsed, as validated)."""
    values, _ = parse_numbers(series)
    return values


def as_codes(series: pd.Series) -> pd.Series:
    """Values as category codes, the way validation compares them with enumerations.

    Text stays as is; integral numbers lose their fraction (1.0 -> ``"1"``), others use
    ``repr``; booleans become ``"False"``/``"True"``; missing values stay missing (NaN).
    Blank text is not turned into missing here (see :func:`missing_mask`).
    """
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("object").map(str, na_action="ignore")
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy("float64", na_value=np.nan)
        return pd.Series(_number_codes(values), index=series.index)
    if isinstance(series.dtype, pd.StringDtype) or _all_text(series):
        return series
    return series.map(_code, na_action="ignore")


def _number_codes(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.nan, dtype=object)
    finite = np.isfinite(values)
    integral = finite & (values == np.round(values)) & (np.abs(values) < 2.0**53)
    out[integral] = values[integral].astype(np.int64).astype(str)
    other = finite & ~integral
    out[other] = [repr(float(v)) for v in values[other]]
    return out


def _code(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return _number_codes(np.array([value], dtype="float64"))[0]
    return repr(value)
