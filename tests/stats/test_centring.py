"""Centring and scaling by public values (stats/kinds/centring.py): what a researcher may
choose, what one row can add (overflow planning and DP sensitivity), what a withheld sum
reads as, and that the plain totals come back exactly."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from node.policy import Policy
from node.validation import coerce
from protocol.errors import QueryError
from stats.datamodel import DataModel, PlanModel, Variable
from stats.kinds import KINDS
from stats.kinds.base import Guard, release
from stats.kinds.centring import MAX_REACH
from stats.planner import layout
from stats.query import QuerySpec

DATASETS = ("d1", "d2")


def _model() -> DataModel:
    variables = [
        Variable("dataset", "dataset", "text", True, DATASETS),
        Variable("stamp", "a Unix time", "real", False, min=1.6e9, max=1.8e9),
        Variable("tiny", "a tiny quantity", "real", False, min=0.0, max=1e-8),
        Variable("age", "age", "int", False, min=18, max=100),
        Variable("free", "no declared range", "real", False),
        Variable("sex", "sex", "text", True, ("F", "M")),
    ]
    return DataModel("centred", "1", {v.code: v for v in variables})


def _rows(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "dataset": rng.choice(DATASETS, n), "stamp": 1.7e9 + rng.normal(0, 1e6, n),
        "tiny": 1e-9 * rng.normal(5, 1, n), "age": rng.integers(18, 100, n),
        "free": rng.normal(0, 3, n), "sex": rng.choice(["F", "M"], n)})
    frame.loc[rng.random(n) < 0.1, "tiny"] = np.nan
    return coerce(frame, _model())


CENTRING = {"stamp": [1.7e9, 1e6], "tiny": [5e-9, 1e-9]}
TERMS = [{"const": 1}, {"var": "stamp"}, {"var": "tiny"}, {"var": "sex", "level": "M"},
         {"var": "age"}, {"var": "free"}]


def _spec(kind: str, centring: object = CENTRING, privacy: dict | None = None,
          **extra: object) -> QuerySpec:
    privacy = privacy or {"mode": "exact"}
    if kind == "moments":
        return QuerySpec("descriptive_stats", "centred:1", DATASETS,
                         ("stamp", "tiny", "age", "free"),
                         "sex", privacy=privacy, parameters={"centring": centring, **extra})
    return QuerySpec("linear_regression", "centred:1", DATASETS, privacy=privacy,
                     kind="crossprod", parameters={"terms": TERMS, "centring": centring, **extra})


@pytest.mark.parametrize(("centring", "message"), [
    ({"free": [0.0, 1.0]}, "'free' declares no range"),
    ({"stamp": [1.0, 1e6]}, r"centre of 'stamp' \(1\) lies outside"),
    ({"stamp": [1.7e9, 1.0]}, r"scale of 'stamp' \(1\) is too small .* 65536 scales"),
    ({"stamp": [1.7e9, 0.0]}, "must be positive"),
    ({"stamp": [1.7e9, float("nan")]}, "finite"),
    ({"sex": [0.0, 1.0]}, "does not sum"),
    ({"nothing": [0.0, 1.0]}, "does not sum"),
    ([1.7e9, 1e6], "maps each summed numeric variable"),
])
@pytest.mark.parametrize("kind", ["moments", "crossprod"])
def test_only_public_centres_and_scales_are_accepted(kind: str, centring: object,
                                                     message: str) -> None:
    """Checked from the query and the data model alone, before any row is read."""
    with pytest.raises(QueryError, match=message):
        layout(_spec(kind, centring), PlanModel(_model()), 1 << 20)


def test_a_centred_design_needs_its_intercept() -> None:
    spec = QuerySpec("linear_regression", "centred:1", DATASETS, kind="crossprod",
                     parameters={"terms": TERMS[1:], "centring": CENTRING})
    with pytest.raises(QueryError, match="intercept"):
        layout(spec, PlanModel(_model()), 1 << 20)


def test_in_dp_mode_the_clipping_bounds_are_the_public_range() -> None:
    privacy = {"mode": "dp", "rho": 0.5, "bounds": {"stamp": [1.69e9, 1.71e9],
                                                    "tiny": [0.0, 1e-8], "free": [-10, 10]}}
    view = PlanModel(_model())
    plan = layout(_spec("moments", {"stamp": [1.7e9, 1e6]}, privacy), view, 1 << 20)
    bounds = {slot.key: slot.bound for slot in plan.slots}
    # |x - c| / h is at most 1e7 / 1e6 within the clipping bounds: the sensitivity
    assert bounds[("sum", "d1", "F", "stamp")] == pytest.approx(10.0)
    assert bounds[("sumsq", "d1", "F", "stamp")] == pytest.approx(100.0)
    assert bounds[("sumsq", "d1", "F", "age")] == 100.0 ** 2  # not centred: as before
    with pytest.raises(QueryError, match="outside its public range"):
        layout(_spec("moments", {"stamp": [1.75e9, 1e6]}, privacy), view, 1 << 20)


@pytest.mark.parametrize("kind", ["moments", "crossprod"])
@pytest.mark.parametrize("mode", ["exact", "dp"])
def test_row_bounds_cover_the_centred_values(kind: str, mode: str) -> None:
    """One row adds at most its bound to every slot: what overflow planning (exact) and the
    noise's sensitivity (DP, on clipped values) rest on."""
    privacy = None if mode == "exact" else {"mode": "dp", "rho": 1.0}
    spec, view = _spec(kind, privacy=privacy), PlanModel(_model())
    rows = _rows()
    rows.loc[rows.index[:3], "stamp"] = [1.6e9, 1.8e9, 1.8e9]  # the range's ends
    magnitudes = {"stamp": 1.8e9, "tiny": 1e-8, "age": 100.0,
                  "free": float(np.abs(rows["free"]).max())}
    bound = KINDS[kind].row_bound(spec, view, lambda code: magnitudes[code])
    for one in range(len(rows)):
        row = rows.iloc[[one]]
        for key, value in KINDS[kind].compute(spec, row, view).values.items():
            assert abs(value) <= bound(key) * (1 + 1e-12), (key, value, bound(key))
    assert bound(("sumsq", "d1", "F", "stamp") if kind == "moments"
                 else ("xx", None, 1, 1)) == pytest.approx(100.0 ** 2)


@pytest.mark.parametrize("kind", ["moments", "crossprod"])
def test_the_plain_totals_come_back_exactly(kind: str) -> None:
    """Released sums of (x - c) / h, turned back with the kind's exact coefficients, are the
    plain sums; computed as they are, the plain sums of Unix times lose their spread."""
    rows, view = _rows(), PlanModel(_model())
    centred = KINDS[kind].compute(_spec(kind), rows, view)
    combine = KINDS[kind].uncentre(_spec(kind), view)
    keys = ([("sumsq", d, g, v) for d in DATASETS for g in ("F", "M") for v in ("stamp", "tiny")]
            if kind == "moments" else [("xx", None, i, j) for i in range(6) for j in range(i, 6)])
    for key in keys:
        combination = combine(key) or {key: Fraction(1)}
        recovered = sum((c * Fraction(centred.values[k]) for k, c in combination.items()),
                        Fraction(0))
        if kind == "moments":
            d, g, v = key[1:]
            cell = rows[(rows.dataset == d) & (rows.sex == g)][v].dropna()
            exact = sum((Fraction(float(x)) ** 2 for x in cell), Fraction(0))
        else:
            from stats.kinds.frame import design

            matrix, _ = design(TERMS, rows)
            i, j = key[2], key[3]
            exact = sum((Fraction(float(a)) * Fraction(float(b))
                         for a, b in zip(matrix[:, i], matrix[:, j], strict=True)), Fraction(0))
        assert float(abs(recovered - exact) / max(abs(exact), Fraction(1, 10**300))) < 1e-13, key


def test_the_guard_counts_the_plain_values_and_a_withheld_sum_reads_as_zeros() -> None:
    """A column non-zero for one patient only: its centred sums would hold that patient's
    value, so they are withheld, and read exactly as the centred sums of zeros do."""
    view = PlanModel(_model())
    spec = QuerySpec("descriptive_stats", "centred:1", ("d1",), ("age", "tiny"),
                     parameters={"centring": {"tiny": [5e-9, 1e-9]}})
    rows = _rows().assign(dataset="d1")
    rows["tiny"] = 0.0
    zeros = KINDS["moments"].compute(spec, rows, view)
    rows.loc[rows.index[7], "tiny"] = 3e-9  # patient P
    one = KINDS["moments"].compute(spec, rows, view)
    assert one.guards[("count", "d1", None, "tiny")][Guard.NONZERO] == 1
    assert zeros.guards[("count", "d1", None, "tiny")][Guard.NONZERO] == 0
    plan = layout(spec, view, 1 << 20).slots
    seen = [release(plan, computed, 10).values for computed in (zeros, one)]
    assert seen[0] == seen[1]
    assert seen[0][("sum", "d1", None, "tiny")] == pytest.approx(-5.0 * len(rows))
    # a small cell (its count) is withheld whole, and reads as an empty one
    few = KINDS["moments"].compute(spec, rows.iloc[:4], view)
    empty = release(plan, few, 10).values
    assert ("sum", "d1", None, "tiny") not in empty and ("count", "d1", None, "tiny") not in empty


def test_a_node_refuses_an_uncentred_sum_beyond_the_encodable_range_naming_it() -> None:
    """Unix times without a declared range cannot be centred: their sum of squares may not
    fit 2^62, and the refusal names the variable and the limit."""
    from node.budget import BudgetKeeper  # noqa: F401 (the session's dependency)
    from node.session import LoadedData, NodeSession

    variables = dict(_model().variables)
    variables["stamp"] = Variable("stamp", "stamp", "real", False)  # no declared range
    model = DataModel("centred", "1", variables)
    session = NodeSession.__new__(NodeSession)
    session.data = LoadedData(model, coerce(_rows(), model))
    session.policy = Policy.default()
    spec = QuerySpec("descriptive_stats", "centred:1", DATASETS, ("stamp",))
    plan = layout(spec, PlanModel(model), 1 << 24)
    with pytest.raises(QueryError, match=r"sum of squares of 'stamp' .* 2\^62"):
        session._check_range(spec, plan)
    assert MAX_REACH ** 2 * (1 << 30) <= 2.0 ** 62


@pytest.mark.parametrize(("low", "high"), [(-1e-39, 1e-39 + 3e-40), (2e-39, 1.0),
                                           (-3.0, 5.0), (0.0, 1e40), (1e-300, 2e-300)])
def test_the_client_asks_only_for_centring_nodes_accept(low: float, high: float) -> None:
    """The client's first centring (the declared range's midpoint and half-width) has its
    centre snapped to 0, or is moved into the magnitudes nodes take ([2^-126, 2^126]), or
    is left out where no centring fits (a centre of magnitude below 2^-126 in a range
    without 0); never one nodes would refuse."""
    from fedtally.centring import _declared

    variables = {"dataset": Variable("dataset", "dataset", "text", True, ("d1",)),
                 "x": Variable("x", "x", "real", False, min=low, max=high)}
    model = DataModel("m", "1", variables)
    spec = QuerySpec("descriptive_stats", "m:1", ("d1",), ("x",))
    centring = _declared(spec, PlanModel(model))
    if centring:
        asked = QuerySpec("descriptive_stats", "m:1", ("d1",), ("x",),
                          parameters={"centring": {v: list(p) for v, p in centring.items()}})
        layout(asked, PlanModel(model), 1 << 20)  # nodes' planning accepts it
    assert ("x" in centring) == ((low, high) != (1e-300, 2e-300))
