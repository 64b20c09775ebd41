"""A node's data model: the MIP's ``CDEsMetadata.json`` as typed, immutable values.

The data model is public: every member of a federation shares it, queries are checked
against it, and clipping bounds and category lists come from it rather than from the rows
(so that the shape of a result never depends on a node's data). It is read exactly as the
MIP writes it, so MIP deployments can bring their models unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from protocol.errors import DataError, QueryError
from stats.numbers import parse_numbers
from stats.plans import DATASET
from stats.suggest import unknown

__all__ = [
    "DATASET",
    "DataModel",
    "LocalDataError",
    "PlanModel",
    "SqlType",
    "Variable",
]

SqlType = Literal["int", "real", "text"]
SQL_TYPES: tuple[SqlType, ...] = ("int", "real", "text")

CDES_FILENAME = "CDEsMetadata.json"
JSON_FORMAT = "fedtally-datamodel/1"
_FOLDER_NAME = re.compile(r"(?P<code>.+?)_v_(?P<version>\d+(?:_\d+)*)")


class LocalDataError(DataError):
    """A data problem whose text names local files or row values.

    It is meant for the node's operator: unlike a plain :class:`DataError` its message must
    never be shown to a peer or a researcher (only its ``code`` may travel).
    """

    public = False


@dataclass(frozen=True)
class Variable:
    """One common data element (CDE): a column that queries may name."""

    code: str
    label: str
    sql_type: SqlType
    is_categorical: bool
    #: allowed codes of a categorical variable, in the model's order (empty otherwise)
    enumerations: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    units: str = ""
    #: display labels, parallel to ``enumerations`` (the codes themselves if not given)
    enumeration_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.code:
            raise DataError("a variable has an empty code")
        if self.sql_type not in SQL_TYPES:
            raise DataError(
                f"variable {self.code!r}: sql_type {self.sql_type!r} is not one of int, real, text"
            )
        if self.is_categorical and not self.enumerations:
            # categories must be public so that tables have a shape independent of the rows
            raise DataError(f"categorical variable {self.code!r} has no enumerations")
        if len(set(self.enumerations)) != len(self.enumerations):
            raise DataError(f"variable {self.code!r} lists an enumeration code twice")
        if not self.enumeration_labels:
            object.__setattr__(self, "enumeration_labels", self.enumerations)
        if len(self.enumeration_labels) != len(self.enumerations):
            raise DataError(f"variable {self.code!r}: enumeration labels do not match codes")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise DataError(f"variable {self.code!r}: min {self.min} is above max {self.max}")

    @property
    def is_numeric(self) -> bool:
        """A non-categorical int or real variable: one that sums and means apply to."""
        return not self.is_categorical and self.sql_type in ("int", "real")

    def to_json(self) -> dict[str, Any]:
        labels = self.enumeration_labels
        return {
            "code": self.code,
            "label": self.label,
            "sql_type": self.sql_type,
            "is_categorical": self.is_categorical,
            "enumerations": [
                {"code": c, "label": lab} for c, lab in zip(self.enumerations, labels, strict=True)
            ],
            "min": self.min,
            "max": self.max,
            "units": self.units,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Variable:
        if not isinstance(obj, Mapping):
            raise DataError("a variable must be a JSON object")
        extra = set(obj) - {
            "code", "label", "sql_type", "is_categorical", "enumerations", "min", "max", "units"
        }
        if extra:
            raise DataError(f"variable has unknown keys: {', '.join(sorted(map(str, extra)))}")
        code = _text(obj.get("code"), "variable code")
        codes, labels = _enumerations(obj.get("enumerations"), code)
        return cls(
            code=code,
            label=_text(obj.get("label", code), f"label of {code!r}", required=False),
            sql_type=_sql_type(obj.get("sql_type"), code),
            is_categorical=_flag(obj.get("is_categorical"), code),
            enumerations=codes,
            min=_bound(obj.get("min"), code, "min"),
            max=_bound(obj.get("max"), code, "max"),
            units=_text(obj.get("units") or "", f"units of {code!r}", required=False),
            enumeration_labels=labels,
        )


@dataclass(frozen=True)
class DataModel:
    """A named, versioned set of variables (the MIP's ``data_model`` such as ``dementia:0.1``)."""

    code: str
    version: str
    variables: Mapping[str, Variable]
    label: str = ""
    #: the MIP marks models whose rows are repeated visits of the same subjects
    longitudinal: bool = field(default=False)
    #: the privacy unit: the variable naming a row's patient, and the most rows a patient
    #: may have (visits); needed for differential privacy on a longitudinal model
    patient_id: str | None = None
    max_rows_per_patient: int | None = None
    #: guessed from the rows (DataModel.infer): its bounds and levels are the data's own
    inferred: bool = False

    def __post_init__(self) -> None:
        if not self.code or not self.version:
            raise DataError("a data model needs a code and a version")
        for key, var in self.variables.items():
            if key != var.code:
                raise DataError(f"variable stored under {key!r} has code {var.code!r}")
        if self.patient_id is not None and self.patient_id not in self.variables:
            raise DataError(f"patient_id {self.patient_id!r} is not a variable of the model")
        limit = self.max_rows_per_patient
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 1 <= limit <= 1_000_000):
            raise DataError("max_rows_per_patient must be a whole number from 1 to 1000000")
        if (self.patient_id is None) != (limit is None):
            raise DataError("declare patient_id and max_rows_per_patient together")
        # read-only view: the model is shared and hashed, it must not change under anyone
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))

    def __hash__(self) -> int:
        return hash(self.digest())

    @property
    def name(self) -> str:
        """The MIP's qualified name, ``code:version``."""
        return f"{self.code}:{self.version}"

    # --- reading the MIP format ---------------------------------------------------------

    @classmethod
    def from_cdes(
        cls,
        obj_or_path: Mapping[str, Any] | str | Path,
        code: str | None = None,
        version: str | None = None,
    ) -> DataModel:
        """Read a ``CDEsMetadata.json`` tree (a dict, the file, or its folder).

        ``code`` and ``version`` win over the file's own top-level ``code``/``version``,
        which win over a folder name such as ``dementia_v_0_1`` (code ``dementia``, version
        ``0.1``). The MIP writes bounds as ``minValue``/``maxValue``; ``min``/``max`` are read
        too, as numbers or numeric strings. Enumerations of non-categorical variables (some
        MIP models carry an empty list there) are ignored.
        """
        folder: Path | None = None
        if isinstance(obj_or_path, str | Path):
            path = Path(obj_or_path)
            if path.is_dir():
                path = path / CDES_FILENAME
            folder = path.parent
            obj = _read_json(path)
        else:
            obj = obj_or_path
        if not isinstance(obj, Mapping):
            raise DataError("CDEs metadata must be a JSON object")
        guess = _FOLDER_NAME.fullmatch(folder.name) if folder is not None else None
        code = code or _opt_text(obj.get("code")) or (guess["code"] if guess else None)
        version = (
            version
            or _opt_text(obj.get("version"))
            or (guess["version"].replace("_", ".") if guess else None)
        )
        if not code or not version:
            raise DataError("the data model's code and version are unknown: pass code= and version=")
        variables: dict[str, Variable] = {}
        for raw in _walk(obj, depth=0):
            var = _variable_from_cde(raw)
            if var.code in variables:
                raise DataError(f"data model {code}:{version} defines {var.code!r} twice")
            variables[var.code] = var
        if DATASET not in variables:
            raise DataError(f"data model {code}:{version} has no {DATASET!r} variable")
        if not variables[DATASET].is_categorical:
            raise DataError(f"the {DATASET!r} variable of {code}:{version} is not categorical")
        return cls(
            code=code,
            version=version,
            variables=variables,
            label=_opt_text(obj.get("label")) or "",
            longitudinal=obj.get("longitudinal") is True,
            patient_id=_opt_text(obj.get("patient_id")),
            max_rows_per_patient=obj.get("max_rows_per_patient"),
        )

    # --- inferring from rows ----------------------------------------------------------

    @classmethod
    def infer(
        cls,
        df: pd.DataFrame,
        code: str = "inferred",
        version: str = "0",
        max_categories: int = 64,
    ) -> DataModel:
        """Guess a model from rows, for local trial federations only.

        Bounds and category lists are taken from the data itself, so such a model reveals
        each column's minimum, maximum and set of values to everyone it is shared with: never
        use it for real sensitive data, write a model instead. Integer columns become
        ``int``, floating ones ``real``; text whose every value is a number (a CSV read as
        text, as nodes read it) becomes ``int`` if every value is written as an integer and
        ``real`` otherwise, its bounds parsed by the node's own parser
        (:mod:`stats.numbers`), so that validation reads back exactly those bounds; booleans
        and other text with at most ``max_categories`` distinct values become categorical
        text (codes sorted; booleans as ``False``/``True``), longer text becomes free
        (non-categorical) text. A ``dataset`` column, if present, is inferred like any
        other; if absent nothing is added (the loader adds one).
        """
        variables: dict[str, Variable] = {}
        for name in df.columns:
            col = str(name)
            series = df[name]
            if pd.api.types.is_bool_dtype(series.dtype):
                variables[col] = Variable(col, col, "text", True, ("False", "True"))
            elif pd.api.types.is_numeric_dtype(series.dtype):
                kind: SqlType = "int" if pd.api.types.is_integer_dtype(series.dtype) else "real"
                variables[col] = _numeric_variable(col, kind, parse_numbers(series)[0])
            elif col != DATASET and (numeric := _numeric_text(series)) is not None:
                variables[col] = _numeric_variable(col, *numeric)
            elif isinstance(series.dtype, pd.CategoricalDtype) or _is_text(series):
                uniques = sorted({str(v) for v in series.dropna().unique()})
                if uniques and (len(uniques) <= max_categories or col == DATASET):
                    variables[col] = Variable(col, col, "text", True, tuple(uniques))
                else:
                    variables[col] = Variable(col, col, "text", False)
            else:
                raise DataError(f"cannot infer a variable for column {col!r} of type {series.dtype}")
        return cls(code=code, version=version, variables=variables, inferred=True)

    # --- plain JSON round trip ----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A plain JSON dict (the form shared with peers and hashed by :meth:`digest`)."""
        return {
            "format": JSON_FORMAT,
            "code": self.code,
            "version": self.version,
            "label": self.label,
            "longitudinal": self.longitudinal,
            "patient_id": self.patient_id,
            "max_rows_per_patient": self.max_rows_per_patient,
            "inferred": self.inferred,
            "variables": [v.to_json() for v in self.variables.values()],
        }

    @classmethod
    def from_json(cls, obj: Any) -> DataModel:
        if not isinstance(obj, Mapping) or obj.get("format") != JSON_FORMAT:
            raise DataError(f"not a data model in the {JSON_FORMAT} format")
        extra = set(obj) - {"format", "code", "version", "label", "longitudinal", "patient_id",
                            "max_rows_per_patient", "inferred", "variables"}
        if extra:
            raise DataError(f"data model has unknown keys: {', '.join(sorted(map(str, extra)))}")
        raw_vars = obj.get("variables")
        if not isinstance(raw_vars, list):
            raise DataError("data model 'variables' must be a list")
        variables: dict[str, Variable] = {}
        for raw in raw_vars:
            var = Variable.from_json(raw)
            if var.code in variables:
                raise DataError(f"data model defines {var.code!r} twice")
            variables[var.code] = var
        return cls(
            code=_text(obj.get("code"), "data model code"),
            version=_text(obj.get("version"), "data model version"),
            variables=variables,
            label=_text(obj.get("label", ""), "data model label", required=False),
            longitudinal=_flag(obj.get("longitudinal", False), "longitudinal"),
            patient_id=_opt_text(obj.get("patient_id")),
            max_rows_per_patient=obj.get("max_rows_per_patient"),
            inferred=_flag(obj.get("inferred", False), "inferred"),
        )

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON form: what queries and ledgers bind to."""
        text = json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
            allow_nan=False,
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # --- lookups --------------------------------------------------------------------------

    def datasets(self) -> tuple[str, ...]:
        """The dataset codes this model declares (the ``dataset`` variable's enumerations)."""
        var = self.variables.get(DATASET)
        return var.enumerations if var is not None else ()

    def variable(self, code: str) -> Variable:
        """The variable ``code``; :class:`QueryError` naming close matches if unknown."""
        try:
            return self.variables[code]
        except (KeyError, TypeError):
            pass
        raise QueryError(unknown("variable", code, self.variables, f"data model {self.name}"))


class PlanModel:
    """Adapts a :class:`DataModel` to the engine's ``ModelView`` protocol."""

    def __init__(self, model: DataModel) -> None:
        self.model = model

    def datasets(self) -> tuple[str, ...]:
        return self.model.datasets()

    def has_variable(self, code: str) -> bool:
        return code in self.model.variables

    def variable_names(self) -> tuple[str, ...]:
        return tuple(self.model.variables)

    def is_numeric(self, code: str) -> bool:
        return self.model.variable(code).is_numeric

    def levels(self, code: str) -> tuple[str, ...]:
        return self.model.variable(code).enumerations

    def bounds(self, code: str) -> tuple[float, float] | None:
        variable = self.model.variable(code)
        if variable.min is None or variable.max is None:
            return None
        return variable.min, variable.max

    def dp_rows_per_unit(self) -> int:
        model = self.model
        if model.inferred:
            raise QueryError(f"data model {model.name} was inferred from the rows: its bounds "
                             "and levels are the data's own, so differential privacy cannot "
                             "hold; write a data model (see DataModel.from_cdes)")
        if model.max_rows_per_patient is not None:
            return model.max_rows_per_patient
        if model.longitudinal:
            raise QueryError(f"data model {model.name} has several rows per patient: "
                             "differential privacy needs its patient_id and "
                             "max_rows_per_patient declared")
        return 1


# --- helpers ------------------------------------------------------------------------------

_MAX_GROUP_DEPTH = 64


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise LocalDataError(f"data model file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalDataError(f"cannot read data model file {path}") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise LocalDataError(f"data model file {path} is not valid JSON") from exc


def _walk(node: Mapping[str, Any], depth: int) -> list[Mapping[str, Any]]:
    """All variables of a CDE tree, depth first, the node's own before its groups'."""
    if depth > _MAX_GROUP_DEPTH:
        raise DataError("data model groups are nested too deeply")
    out: list[Mapping[str, Any]] = []
    variables = node.get("variables") or []
    groups = node.get("groups") or []
    if not isinstance(variables, list) or not isinstance(groups, list):
        raise DataError("'variables' and 'groups' of a data model must be lists")
    for var in variables:
        if not isinstance(var, Mapping):
            raise DataError("a data model variable must be a JSON object")
        out.append(var)
    for group in groups:
        if not isinstance(group, Mapping):
            raise DataError("a data model group must be a JSON object")
        out.extend(_walk(group, depth + 1))
    return out


def _variable_from_cde(raw: Mapping[str, Any]) -> Variable:
    code = _text(raw.get("code"), "variable code")
    is_categorical = _flag(raw.get("isCategorical"), code)
    codes: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    if is_categorical:
        codes, labels = _enumerations(raw.get("enumerations"), code)
    return Variable(
        code=code,
        label=_opt_text(raw.get("label")) or code,
        sql_type=_sql_type(raw.get("sql_type"), code),
        is_categorical=is_categorical,
        enumerations=codes,
        min=_bound(raw.get("minValue", raw.get("min")), code, "min"),
        max=_bound(raw.get("maxValue", raw.get("max")), code, "max"),
        units=_opt_text(raw.get("units")) or "",
        enumeration_labels=labels,
    )


def _enumerations(raw: Any, code: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if raw is None:
        return (), ()
    if not isinstance(raw, list):
        raise DataError(f"enumerations of {code!r} must be a list")
    codes: list[str] = []
    labels: list[str] = []
    for item in raw:
        if not isinstance(item, Mapping) or "code" not in item:
            raise DataError(f"an enumeration of {code!r} has no code")
        enum_code = item["code"]
        if isinstance(enum_code, bool) or not isinstance(enum_code, str | int | float):
            raise DataError(f"an enumeration code of {code!r} is not text")
        codes.append(str(enum_code))
        labels.append(_opt_text(item.get("label")) or str(enum_code))
    return tuple(codes), tuple(labels)


def _sql_type(raw: Any, code: str) -> SqlType:
    if raw not in SQL_TYPES:
        raise DataError(f"variable {code!r}: sql_type {raw!r} is not one of int, real, text")
    return cast(SqlType, raw)


def _flag(raw: Any, code: str) -> bool:
    if not isinstance(raw, bool):
        raise DataError(f"{code!r}: expected true or false, got {raw!r}")
    return raw


def _bound(raw: Any, code: str, which: str) -> float | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise DataError(f"variable {code!r}: {which} {raw!r} is not a number")
    try:
        value = float(raw)
    except ValueError as exc:
        raise DataError(f"variable {code!r}: {which} {raw!r} is not a number") from exc
    if not math.isfinite(value):
        raise DataError(f"variable {code!r}: {which} must be finite")
    return value


def _text(raw: Any, what: str, required: bool = True) -> str:
    if not isinstance(raw, str) or (required and not raw):
        raise DataError(f"{what} must be a {'non-empty ' if required else ''}string")
    return raw


def _opt_text(raw: Any) -> str | None:
    return raw if isinstance(raw, str) and raw else None


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def _numeric_text(series: pd.Series) -> tuple[SqlType, np.ndarray] | None:
    """(int or real, values) of an object or text column whose every present value is a
    finite number or text of one (blank cells are missing: rows read as text, or a mix of
    typed and text frames); None otherwise. ``int`` when every value is an integer or
    written as one."""
    if series.dtype != object and not pd.api.types.is_string_dtype(series.dtype):
        return None
    objects = series.to_numpy(dtype=object, na_value=None)
    present = np.array([v is not None and not (isinstance(v, str) and not v.strip())
                        and not (isinstance(v, float) and math.isnan(v)) for v in objects],
                       dtype=bool)
    if not present.any():
        return None
    values, bad = parse_numbers(pd.Series(np.where(present, objects, None), dtype=object))
    if bad.any() or not np.isfinite(values[present]).all():
        return None
    integers = all(_INTEGER_TEXT.fullmatch(v) if isinstance(v, str)
                   else isinstance(v, int | np.integer) for v in objects[present])
    return ("int" if integers else "real"), values


def _numeric_variable(code: str, kind: SqlType, values: np.ndarray) -> Variable:
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if len(finite) else None
    high = float(finite.max()) if len(finite) else None
    return Variable(code, code, kind, False, min=low, max=high)


def _is_text(series: pd.Series) -> bool:
    if pd.api.types.is_string_dtype(series.dtype):
        return True
    if series.dtype == object:
        return bool(series.dropna().map(lambda v: isinstance(v, str)).all())
    return False
