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
- required columns: ``dataset`` (unless the data source names the dataset) and, where the
  model declares one, its ``patient_id``. Other variables of the model may be absent (all
  missing at this node, as the MIP allows a CSV fewer columns than its data model), but
  only when every column of the data is a variable of the model: a column the model does
  not know next to a variable the data lacks is a renamed or misspelt header, and is an
  error naming both (a close match is offered). Unknown columns alone are ignored by the
  statistics and reported as *warnings* (errors with ``strict=True``);
- :func:`check` gives ``fedtally node check``'s report: per variable the values present,
  missing, out of range and invalid, the unknown and absent columns, and the problems.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stats.datamodel import DATASET, DataModel, LocalDataError, Variable
from stats.numbers import arrow_text, parse_numbers

__all__ = [
    "CheckReport",
    "Problem",
    "ValidationFailed",
    "as_codes",
    "as_numbers",
    "absent_variables",
    "check",
    "check_valid",
    "header_problems",
    "log_column_notes",
    "number_hint",
    "coerce",
    "missing_mask",
    "validate",
]

log = logging.getLogger("fedtally.node")
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

    def __init__(self, message: str, problems: list[Problem], total: int, *,
                 absent: tuple[str, ...] = (), unknown: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems
        self.total = total
        #: variables the data has no column for; columns the model does not know
        self.absent = absent
        self.unknown = unknown


def validate(
    df: pd.DataFrame, model: DataModel, *, strict: bool = False, limit: int | None = None
) -> list[Problem]:
    """Every problem (or the first ``limit``): whole-column ones first, then by row."""
    problems, _ = _scan(df, model, strict, limit)
    return problems


def check_valid(df: pd.DataFrame, model: DataModel, *, strict: bool = False) -> None:
    """Raise :class:`ValidationFailed` listing the first 20 errors and their total count.

    Warnings alone do not fail; the message and ``problems`` then hold only errors. They
    go to the operator's log, with the variables the data has no column for.
    """
    column_problems, findings = _inspect(df, model, strict)
    log_column_notes(column_problems, absent_variables(df, model), model)
    errors = [p for p in column_problems if p.severity == "error"]
    problems, total = _listed(errors, findings, _SHOWN)
    if total == 0:
        return
    lines = [f"{total} problem(s) in the data for model {model.name}:"]
    lines += [f"  {p}" for p in problems]
    if total > len(problems):
        lines.append(f"  ... and {total - len(problems)} more")
    raise ValidationFailed("\n".join(lines), problems, total)


def log_column_notes(column_problems: list[Problem], absent: list[str], model: DataModel
                     ) -> None:
    """The operator's log of what is not an error: unknown columns (warnings) and the
    variables the data has no column for."""
    for problem in column_problems:
        if problem.severity == "warning":
            log.warning("data for model %s: %s", model.name, problem)
    if absent:
        log.info("data for model %s: no column for %d variable(s), missing at this node: %s",
                 model.name, len(absent), ", ".join(absent))


@dataclass(frozen=True)
class CheckReport:
    """What ``fedtally node check`` shows an operator about the rows against the model."""

    model: str
    rows: int
    datasets: tuple[str, ...]
    #: per variable of the model: type, values present, missing, out of range, invalid
    summary: pd.DataFrame
    #: columns the model does not know; variables the data has no column for
    unknown: tuple[str, ...]
    absent: tuple[str, ...]
    #: the first errors, then every warning
    problems: tuple[Problem, ...]
    #: how many errors in all
    errors: int

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def text(self) -> str:
        datasets = ", ".join(self.datasets) or "none"
        valid = "valid rows" if self.ok else "rows"
        lines = [f"{self.rows} {valid} of {self.model}; datasets {datasets}", ""]
        table = self.summary[self.summary["present"]].drop(columns="present")
        table.columns = ["type", "values", "missing", "out of range", "invalid"]
        if len(table):
            lines += [table.to_string(), ""]
        lines += column_notes(self.absent, self.unknown)
        shown = [p for p in self.problems if p.severity == "error"]
        warnings = [p for p in self.problems if p.severity == "warning"]
        if shown:
            lines.append(f"{self.errors} problem(s):")
            lines += [f"  {p}" for p in shown]
            if self.errors > len(shown):
                lines.append(f"  ... and {self.errors - len(shown)} more")
        lines += [f"warning: {p}" for p in warnings]
        if self.ok and self.rows == 0:  # valid, and most likely not what was meant
            lines.append("warning: the data holds no rows (a file with its header only?): "
                         "this node would answer every query with nothing")
        lines.append("the data is valid" if self.ok else REFUSED)
        return "\n".join(line for i, line in enumerate(lines)
                         if line or (i and lines[i - 1]))


def check(df: pd.DataFrame, model: DataModel, *, strict: bool = False) -> CheckReport:
    """Validate ``df`` and summarise it per variable (``fedtally node check``)."""
    column_problems, findings = _inspect(df, model, strict)
    errors = [p for p in column_problems if p.severity == "error"]
    shown, total = _listed(errors, findings, _SHOWN)
    warnings = [p for p in column_problems if p.severity == "warning"]
    masks: dict[tuple[str, str], np.ndarray] = {}
    for finding in findings:
        key = (finding.column, finding.kind)
        masks[key] = masks[key] | finding.mask if key in masks else finding.mask
    records = []
    for code, var in model.variables.items():
        kind = _describe_type(var)
        if code not in df.columns or isinstance(df[code], pd.DataFrame):
            records.append((code, kind, False, 0, len(df), 0, 0))
            continue
        missing = missing_mask(df[code])
        out = masks.get((code, "range"), np.zeros(len(df), bool))
        bad = masks.get((code, "invalid"), np.zeros(len(df), bool)) & ~out
        records.append((code, kind, True, int((~missing).sum()), int(missing.sum()),
                        int(out.sum()), int(bad.sum())))
    summary = pd.DataFrame.from_records(
        records, columns=["variable", "type", "present", "values", "missing", "out_of_range",
                          "invalid"]).set_index("variable")
    datasets: tuple[str, ...] = ()
    if DATASET in df.columns and not isinstance(df[DATASET], pd.DataFrame):
        codes = df[DATASET][~missing_mask(df[DATASET])]
        datasets = tuple(sorted({str(v) for v in codes.unique()}))
    unknown = tuple(str(c) for c in df.columns if str(c) not in model.variables)
    return CheckReport(model.name, len(df), datasets, summary, unknown,
                       tuple(absent_variables(df, model)), (*shown, *warnings), total)


#: the last line of a report on data a node would refuse
REFUSED = "the data is NOT valid: the node refuses to serve it"


def column_notes(absent: Sequence[str], unknown: Sequence[str]) -> list[str]:
    """The report's lines on the variables the data has no column for and the columns the
    data model does not know (none where there are none)."""
    lines = []
    if absent:
        lines.append(f"no column (missing for every row here): {', '.join(absent)}")
    if unknown:
        lines.append(f"not in the data model: {', '.join(unknown)}")
    return lines


def counted_report(model: DataModel, rows: int, datasets: Sequence[str],
                   values: Mapping[str, int | None], unknown: Sequence[str],
                   warnings: Sequence[Problem]) -> CheckReport:
    """The report of rows that passed every check where they are kept (a SQL store), from
    each variable's count of values (None: the data has no column for it)."""
    records = [(code, _describe_type(var), values.get(code) is not None,
                int(values.get(code) or 0), rows - int(values.get(code) or 0), 0, 0)
               for code, var in model.variables.items()]
    summary = pd.DataFrame.from_records(
        records, columns=["variable", "type", "present", "values", "missing", "out_of_range",
                          "invalid"]).set_index("variable")
    absent = tuple(code for code in model.variables
                   if code != DATASET and values.get(code) is None)
    return CheckReport(model.name, rows, tuple(datasets), summary, tuple(unknown), absent,
                       tuple(warnings), 0)


def _describe_type(var: Variable) -> str:
    if var.is_categorical:
        return f"categorical ({len(var.enumerations)} levels)"
    if not var.is_numeric:
        return "text"
    if var.min is None and var.max is None:
        return var.sql_type
    low = "" if var.min is None else _shown(var.min)
    high = "" if var.max is None else _shown(var.max)
    return f"{var.sql_type} [{low}, {high}]"


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
    #: "range" (below the minimum, above the maximum, not a code) or "invalid" (not a
    #: number, not finite, not an integer, no dataset)
    kind: str = "invalid"


def _columns(df: pd.DataFrame, model: DataModel, strict: bool) -> list[Problem]:
    return header_problems([str(c) for c in df.columns], model, strict=strict)


def header_problems(columns: Sequence[str], model: DataModel, *, strict: bool = False
                    ) -> list[Problem]:
    """Whole-column problems of data holding these columns: the dataset column, the patient
    identifier, and columns the model does not know (errors where the data also lacks a
    model variable: that is a renamed or misspelt header). Every row store checks its
    columns with this."""
    problems: list[Problem] = []
    if DATASET not in model.variables:
        problems.append(Problem(None, DATASET, f"data model {model.name} has no dataset variable"))
    if DATASET not in columns:
        problems.append(
            Problem(None, DATASET, "the data has no dataset column (give the source a dataset)")
        )
    patient = model.patient_id
    if patient is not None and patient not in columns:
        problems.append(Problem(None, patient, "the data has no column for the patient "
                                               "identifier the data model declares"))
    absent = _absent(columns, model)
    for column in columns:
        if column in model.variables:
            continue
        if absent:
            problems.append(Problem(None, column, _renamed(column, absent, model)))
        else:
            severity: Severity = "error" if strict else "warning"
            problems.append(Problem(None, column, f"not a variable of data model {model.name}",
                                    severity))
    return problems


def _renamed(column: str, absent: list[str], model: DataModel) -> str:
    lowered = {a.lower().strip(): a for a in absent}
    close = difflib.get_close_matches(column.lower().strip(), list(lowered), n=1, cutoff=0.6)
    if close:
        return (f"not a variable of data model {model.name}; did you mean "
                f"{lowered[close[0]]!r}, which the data lacks? (a renamed or misspelt header: "
                "name the column as the model does, or remove it)")
    shown = ", ".join(repr(a) for a in absent[:5]) + (", ..." if len(absent) > 5 else "")
    return (f"not a variable of data model {model.name}, while the data lacks {len(absent)} "
            f"of its variables ({shown}): a renamed header? Name the column as the model "
            "does, or remove it")


def absent_variables(df: pd.DataFrame, model: DataModel) -> list[str]:
    """The model's variables (but ``dataset``) that the data has no column for."""
    return _absent([str(c) for c in df.columns], model)


def _absent(columns: Sequence[str], model: DataModel) -> list[str]:
    present = set(columns)
    return [code for code in model.variables if code != DATASET and code not in present]


def _inspect(df: pd.DataFrame, model: DataModel, strict: bool
             ) -> tuple[list[Problem], list[_Finding]]:
    column_problems = _columns(df, model, strict)
    findings: list[_Finding] = []
    for position, name in enumerate(df.columns):
        var = model.variables.get(str(name))
        if var is None:
            continue
        series = df[name]
        if isinstance(series, pd.DataFrame):
            column_problems.append(Problem(None, str(name), "the column appears more than once"))
            continue
        findings.extend(_check_column(position, str(name), series, var))
    return column_problems, findings


def _scan(
    df: pd.DataFrame,
    model: DataModel,
    strict: bool,
    limit: int | None,
    errors_only: bool = False,
) -> tuple[list[Problem], int]:
    column_problems, findings = _inspect(df, model, strict)
    if errors_only:
        column_problems = [p for p in column_problems if p.severity == "error"]
    return _listed(column_problems, findings, limit)


def _listed(column_problems: list[Problem], findings: list[_Finding], limit: int | None
            ) -> tuple[list[Problem], int]:
    """Whole-column problems first, then row problems in row order (the first ``limit``),
    and the total count."""
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

    def add(mask: np.ndarray, describe: Callable[[int], str], kind: str = "invalid") -> None:
        if mask.any():
            found.append(_Finding(position, column, mask, describe, kind))

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
        add(bad, lambda i: f"value {value(i)} is not a code of ({shown}{more})", "range")
    elif var.is_numeric:
        values, bad = parse_numbers(series, na, arrow)
        blank = _blank_among(series, bad)
        bad &= ~blank
        add(bad, lambda i: f"value {value(i)} is not a number{number_hint(cache[0][i])}")
        add(np.isinf(values), lambda i: f"value {value(i)} is not finite")
        finite = np.isfinite(values)
        if var.sql_type == "int":
            fraction = finite & (values != np.round(values))
            add(fraction, lambda i: f"value {value(i)} is not an integer")
        if var.min is not None:
            low = var.min
            add(finite & (values < low),
                lambda i: f"value {value(i)} is below the minimum {_shown(low)}", "range")
        if var.max is not None:
            high = var.max
            add(finite & (values > high),
                lambda i: f"value {value(i)} is above the maximum {_shown(high)}", "range")
    return found


def _shown(bound: float) -> str:
    """A bound as short as it reads back exactly (never rounded to look like the value)."""
    short = f"{bound:g}"
    return short if float(short) == bound else repr(bound)


_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]*,[0-9]+")


def number_hint(raw: Any) -> str:
    """Why a cell that is not a number may have been meant as one (or nothing)."""
    if isinstance(raw, str) and _DECIMAL_COMMA.fullmatch(raw.strip()):
        return " (a decimal comma? numbers are written with a point: 1.5)"
    if isinstance(raw, str) and raw != raw.strip():
        return " (blanks around it)"
    if isinstance(raw, str) and raw.strip().casefold() in _MISSING_WORDS:
        return " (a missing value? leave the cell empty)"
    return ""


#: words some tools write for a missing value; the data model's missing value is an empty
#: cell (they are not read as missing: a word in a numeric column may be a typo)
_MISSING_WORDS = frozenset({"na", "n/a", "nan", "null", "none", "missing", "-", ".", "?",
                            "#n/a", "nil"})


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
