"""What the two naive Bayes classifiers share: prediction on the caller's rows, and the
checks of their fits.

Both are fitted on the complete cases: rows where the class ``y`` and every feature are
present (the query's filter is the researcher's filter AND ``v is not null`` for each of
them), as scikit-learn, which accepts no missing value, sees the rows after ``dropna()``.

Classes are the levels of ``y`` (data-model order) that have at least one complete row;
scikit-learn orders its ``classes_`` alphabetically, so compare by label. Cells and
classes smaller than a node's small-cell threshold are left out by that node
(``federation["cells_below_threshold"]`` counts the node-level cells that read 0, empty ones
included), so on data with small cells the fit is that of the rows that were released.

Prediction runs on the caller's own rows (``predict``, ``predict_proba``,
``predict_log_proba`` on a pandas DataFrame). Unlike scikit-learn, which refuses them, a
missing feature value (or, for the categorical model, a value that is not a level of the
data model) is left out of that row's likelihood: naive Bayes marginalizes a feature by
dropping its factor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.suggest import unknown


class Classifier(ABC):
    """Shared prediction: subclasses give the joint log-likelihood of each class."""

    classes_: tuple[str, ...]
    features: tuple[str, ...]

    @abstractmethod
    def _joint_log_likelihood(self, data: pd.DataFrame) -> np.ndarray: ...

    def predict_log_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        """Log posterior probability of each class (columns) for each local row."""
        jll = self._joint_log_likelihood(data)
        return pd.DataFrame(jll - logsumexp(jll, axis=1, keepdims=True), index=data.index,
                            columns=list(self.classes_))

    def predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        """Posterior probability of each class (columns) for each local row."""
        return np.exp(self.predict_log_proba(data))

    def predict(self, data: pd.DataFrame) -> pd.Series:
        """The most probable class of each local row."""
        jll = self._joint_log_likelihood(data)
        labels = np.asarray(self.classes_, dtype=object)[np.argmax(jll, axis=1)]
        return pd.Series(labels, index=data.index, name="prediction")


def check_names(y: str, x: Sequence[str] | str, view: PlanModel, numeric: bool,
                what: str) -> tuple[str, ...]:
    if isinstance(x, str):
        x = [x]
    features = tuple(x)
    if not view.has_variable(y):
        raise QueryError(unknown("variable", y, view.variable_names()))
    if view.is_numeric(y):
        raise QueryError(f"{what}: the class {y!r} must be categorical")
    if not features or len(set(features)) != len(features) or y in features:
        raise QueryError(f"{what} needs distinct features, other than the class {y!r}")
    kind = "numeric" if numeric else "categorical"
    for v in features:
        if not view.has_variable(v):
            raise QueryError(unknown("variable", v, view.variable_names()))
        if view.is_numeric(v) != numeric:
            raise QueryError(f"{what} needs {kind} features; {v!r} is not {kind}")
    return features


def observed_classes(counts: dict[str, int], federation: dict[str, int], what: str) -> list[str]:
    classes = [c for c, n in counts.items() if n > 0]
    if not classes:
        raise DegenerateInput(
            f"{what}: no complete rows (the filter matched none, or every node's cohort was "
            f"below its minimum: {federation['nodes_contributing']} of "
            f"{federation['nodes_asked']} nodes contributed)")
    return classes
