"""What the SQL row stores' loaders share: the bookkeeping of the checks they run in SQL,
and the problems they name, worded as the pandas store words them (node.validation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node.sql.store import sql_literal
from node.validation import (
    Problem,
    ValidationFailed,
    header_problems,
    log_column_notes,
    number_hint,
)
from stats.datamodel import DataModel
from stats.plans import DATASET

if TYPE_CHECKING:
    from node.datasource import DataSource

#: the failing rows named at most (per check, and in all)
SHOWN = 20


class CheckedLoader:
    """A loader's findings: the errors shown (the first rows of each failing check), how
    many in all, and the column warnings; :meth:`finish_checks` raises them together."""

    def __init__(self, model: DataModel, strict: bool) -> None:
        self.model = model
        self.strict = strict
        self.warnings: list[Problem] = []
        self.errors: list[Problem] = []
        self.total_errors = 0
        #: every source's columns, in order of first appearance (checked together at the
        #: end, as the pandas store checks the united frame)
        self.names: dict[str, None] = {}
        self.columns = {code: f"c{i}" for i, code in enumerate(model.variables)}

    def check_dataset_column(self, source: DataSource, names: list[str]) -> None:
        """A source whose rows cannot say their dataset is an error."""
        if DATASET not in names and source.dataset is None:
            self.errors.append(Problem(None, DATASET, "the data has no dataset column (give "
                                       "the source a dataset)"))
            self.total_errors += 1

    def checks(self, n: str, source: DataSource, value: str, blank: str
               ) -> list[tuple[str, str]]:
        """Variable ``n``'s checks, as (what a failing value is, SQL true where it fails)
        over the value (a number, or a code's text) and the blankness given, in SQL that
        DuckDB and Spark share (``isinf``/``isfinite`` are :meth:`infinite`/:meth:`finite`)."""
        variable = self.model.variables[n]
        out = []
        if n == DATASET and source.dataset is None:
            out.append(("the row has no dataset", blank))
        if variable.is_categorical:
            enums = ", ".join(self.literal(e) for e in variable.enumerations)
            shown = ", ".join(repr(c) for c in variable.enumerations[:6])
            more = ", ..." if len(variable.enumerations) > 6 else ""
            unknown = f"{value} NOT IN ({enums})" if enums else "TRUE"
            out.append((f"is not a code of ({shown}{more})", f"NOT {blank} AND {unknown}"))
        elif variable.is_numeric:
            out.append(("is not a number", f"NOT {blank} AND ({value} IS NULL OR "
                                           f"isnan({value}))"))
            out.append(("is not finite", self.infinite(value)))
            finite = self.finite(value)
            if variable.sql_type == "int":
                out.append(("is not an integer", f"{finite} AND {value} <> round({value})"))
            if variable.min is not None:
                out.append((f"is below the minimum {variable.min:g}",
                            f"{finite} AND {value} < {float(variable.min)!r}"))
            if variable.max is not None:
                out.append((f"is above the maximum {variable.max:g}",
                            f"{finite} AND {value} > {float(variable.max)!r}"))
        return out

    def literal(self, text: str) -> str:
        """A code of the data model in the statement (Spark binds it as a parameter)."""
        return sql_literal(text)

    @staticmethod
    def infinite(value: str) -> str:
        return f"isinf({value})"

    @staticmethod
    def finite(value: str) -> str:
        return f"isfinite({value})"

    @staticmethod
    def first_failing(rows: list[tuple[int, int, str, str, Any]]) -> list[Problem]:
        """``(row, check's rank, column, what fails, value)`` per failing cell: the first
        :data:`SHOWN` problems, in the file's row order, worded for the operator."""
        out = []
        for row, rank, column, what, value in rows:
            text = repr(value)
            text = text if len(text) <= 40 else text[:37] + "..."
            message = what if what.startswith("the row") else f"value {text} {what}"
            if what == "is not a number":
                message += number_hint(value)
            out.append((int(row), rank, Problem(int(row), column, message)))
        out.sort(key=lambda item: item[:2])
        return [p for _, _, p in out[:SHOWN]]

    def finish_checks(self) -> None:
        """Unknown columns, renamed headers, the patient identifier: what the pandas store
        finds (the dataset column is checked per source); raises every error found."""
        columns = header_problems([*self.names, DATASET], self.model, strict=self.strict)
        errors = [p for p in columns if p.severity == "error"]
        self.warnings = [p for p in columns if p.severity == "warning"]
        self.errors = errors + self.errors
        self.total_errors += len(errors)
        log_column_notes(columns, [c for c in self.model.variables
                                   if c != DATASET and c not in self.names], self.model)
        if self.errors:
            shown = self.errors[:SHOWN]
            lines = [f"{self.total_errors} problem(s) in the data for model {self.model.name}:"]
            lines += [f"  {p}" for p in shown]
            if self.total_errors > len(shown):
                lines.append(f"  ... and {self.total_errors - len(shown)} more")
            raise ValidationFailed(
                "\n".join(lines), self.errors, self.total_errors, absent=tuple(
                    c for c in self.model.variables if c != DATASET and c not in self.names),
                unknown=tuple(n for n in self.names if n not in self.model.variables))
