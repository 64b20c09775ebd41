"""The registry the disclosure tests attack, in two versions that differ in one patient.

Patient P (at hospital ``a``) is the only patient aged 90 or more, the only one of sex ``U``,
the only one whose ``arm`` is missing, the only one with a prior stroke, and, among the
rows whose glucose is missing, the only one with a glucose value. Run A and run B hold the
same rows except P's values (age, glucose, NIHSS, smoking, prior strokes, diabetes, days,
raw status); P's weight, stroke and death are the same in both. An attack succeeds when what the researcher receives differs between the two
runs in a way that reveals P's value; the defence holds when it is identical, or withheld.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
import pandas as pd

from protocol.errors import FedtallyError
from stats.datamodel import DataModel, Variable

HOSPITALS = ("a", "b", "c")
#: P's values in run A and run B
PATIENT = {
    "A": {"age": 99, "glucose": 5.1, "nihss": 40, "smoker": 0, "prior_strokes": 1,
          "diabetes": "yes", "days": 100, "status_raw": 2},
    "B": {"age": 97, "glucose": 9.7, "nihss": 35, "smoker": 1, "prior_strokes": 3,
          "diabetes": "no", "days": 200, "status_raw": 1},
}


def model() -> DataModel:
    variables = [
        Variable("dataset", "hospital", "text", True, HOSPITALS),
        Variable("age", "age", "int", False, min=18, max=100),
        Variable("sex", "sex", "text", True, ("F", "M", "U")),
        Variable("arm", "treatment arm", "text", True, ("A", "B")),
        Variable("nihss", "NIHSS", "int", False, min=0, max=42),
        Variable("weight", "weight", "real", False, min=30, max=200),
        Variable("glucose", "glucose", "real", False, min=2, max=30),
        Variable("smoker", "smokes (1) or not (0)", "int", False, min=0, max=1),
        Variable("prior_strokes", "prior strokes", "int", False, min=0, max=5),
        Variable("diabetes", "diabetes", "text", True, ("no", "yes")),
        Variable("stroke", "stroke", "text", True, ("no", "yes")),
        Variable("days", "days to death or censoring", "int", False, min=0, max=365),
        Variable("died", "died (1) or not (0)", "int", False, min=0, max=1),
        # an event column a data owner forgot to declare binary (no bounds)
        Variable("status_raw", "status as exported", "int", False),
    ]
    return DataModel("attack", "1", {v.code: v for v in variables})


def _hospital(name: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    died = rng.integers(0, 2, n)
    frame = pd.DataFrame({
        "dataset": name,
        "age": rng.integers(30, 90, n),  # nobody but P is 90 or older
        "sex": rng.choice(["F", "M"], n),
        "arm": rng.choice(["A", "B"], n),
        "nihss": rng.integers(0, 31, n),
        "weight": rng.uniform(50, 110, n).round(1),
        "glucose": rng.uniform(4, 12, n).round(1),
        "smoker": rng.integers(0, 2, n),
        "prior_strokes": 0,
        "diabetes": rng.choice(["no", "yes"], n),
        "stroke": rng.choice(["no", "yes"], n),
        "days": rng.integers(1, 366, n),
        "died": died,
        "status_raw": died,
    })
    frame.loc[rng.random(n) < 0.4, "glucose"] = np.nan
    return frame


def registry(run: str) -> dict[str, pd.DataFrame]:
    """The three hospitals' rows in run ``"A"`` or ``"B"``."""
    data = {name: _hospital(name, n, seed)
            for name, n, seed in zip(HOSPITALS, (140, 120, 130), (11, 12, 13), strict=True)}
    patient = {"dataset": "a", "sex": "U", "arm": np.nan, "stroke": "no", "died": 1,
               "weight": 81.5, **PATIENT[run]}
    data["a"] = pd.concat([data["a"], pd.DataFrame([patient])], ignore_index=True)
    return data


# --- what a researcher receives ---------------------------------------------------------


def fingerprint(value: Any) -> Any:
    """Everything a result holds, as plain comparable data (NaN equal to NaN)."""
    if isinstance(value, pd.DataFrame):
        return ("frame", fingerprint(value.index.tolist()), fingerprint(value.columns.tolist()),
                fingerprint(value.to_numpy().tolist()), fingerprint(dict(value.attrs)))
    if isinstance(value, pd.Series):
        return ("series", fingerprint(value.index.tolist()), fingerprint(value.tolist()))
    if isinstance(value, np.ndarray):
        return fingerprint(value.tolist())
    if is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,
                {f.name: fingerprint(getattr(value, f.name)) for f in fields(value)})
    if isinstance(value, Mapping):
        return {str(k): fingerprint(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fingerprint(v) for v in value]
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else float(value)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return (type(value).__name__, fingerprint(vars(value)))
    return value


def observe(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a researcher sees of a call: its result, or its error's type and text (the
    aggregator names the node whose refusal arrived first: a race, not data)."""
    try:
        return ("answer", fingerprint(call()))
    except FedtallyError as exc:
        return ("refused", type(exc).__name__, exc.code,
                re.sub(r"^[\w-]+ refused: ", "node refused: ", str(exc)))
