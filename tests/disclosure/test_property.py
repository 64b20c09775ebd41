"""Property-based: hypothesis chooses the target row, its new value, the filter and the
grouping; two in-memory federations running the real node code hold the same rows but the
target's value. Whatever differs between what the two researchers receive comes from cells
of at least k values, and the "all" rows are the sums of the released groups: no answer
isolates one row.

What a threshold cannot hide is its boundary: a cell of exactly k non-zero values is
released in one run and withheld in the other when the target's value becomes 0 (or its
row leaves the cell). That reveals one bit about a row placed at the boundary, as any exact
count does; threat_model.md says so, and DP mode is the answer to it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from protocol.errors import DegenerateInput
from stats.datamodel import DataModel, Variable

K = 4
NODES = ("n0", "n1", "n2")
POLICY = Policy(min_row_count=K, small_cell_threshold=K)


def _model() -> DataModel:
    variables = [
        Variable("dataset", "dataset", "text", True, NODES),
        Variable("rid", "row id", "int", False, min=0, max=999),
        Variable("x", "a measurement", "real", False, min=0, max=100),
        Variable("sex", "sex", "text", True, ("F", "M", "U")),
        Variable("arm", "arm", "text", True, ("A", "B", "C")),
    ]
    return DataModel("prop", "1", {v.code: v for v in variables})


def _data() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(3)
    out = {}
    for i, node in enumerate(NODES):
        n = 18
        frame = pd.DataFrame({"rid": np.arange(n) + 100 * i,
                              "x": rng.uniform(0, 100, n).round(2),
                              "sex": rng.choice(["F", "M", "U"], n, p=[0.45, 0.45, 0.1]),
                              "arm": rng.choice(["A", "B", "C"], n)})
        frame.loc[rng.random(n) < 0.3, "x"] = np.nan
        frame.loc[rng.random(n) < 0.15, "sex"] = np.nan
        out[node] = frame
    return out


DATA = _data()
MODEL = _model()
ROWS = [(node, i) for node, frame in DATA.items() for i in range(len(frame))
        if not math.isnan(frame.loc[i, "x"])]


def _federation(data: dict[str, pd.DataFrame]) -> SimulatedFederation:
    return SimulatedFederation(data, MODEL, seed=1, policy=POLICY)


FILTERS = st.sampled_from([None, "x is null or rid == {rid}", "sex == '{sex}' or rid == {rid}",
                           "arm == '{arm}'", "x is null or arm == '{arm}'", "rid <= {upto}"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(ROWS), value=st.floats(0, 100, allow_nan=False).map(
    lambda v: round(v, 2)), template=FILTERS, by=st.sampled_from([None, "sex", "arm"]))
def test_descriptive_stats_never_isolate_a_row(target, value, template, by) -> None:
    node, index = target
    row = DATA[node].loc[index]
    changed = {name: frame.copy() for name, frame in DATA.items()}
    changed[node].loc[index, "x"] = value if value != row["x"] else value + 0.5
    filters = None if template is None else template.format(
        rid=int(row["rid"]), upto=int(row["rid"]) + 3, sex=row["sex"] if isinstance(row["sex"], str) else "F",
        arm=row["arm"])
    def answer(data: dict[str, pd.DataFrame]) -> pd.DataFrame | DegenerateInput:
        try:
            return _federation(data).descriptive_stats(["x"], by=by, filters=filters)
        except DegenerateInput as exc:  # nothing released: every cell below K
            return exc

    a, b = answers = [answer(data) for data in (DATA, changed)]
    if isinstance(a, DegenerateInput) or isinstance(b, DegenerateInput):
        # a refusal must not depend on the target's value
        assert str(a) == str(b)
        return
    assert a.index.equals(b.index)
    for answer in answers:
        # no cell of fewer than K values is ever released, in either run
        assert ((answer["count"] == 0) | (answer["count"] >= K)).all()
        if by is not None:
            # "all" is the sum of the released groups: no margin holds a withheld one
            groups = answer.drop(index="all", level=by)
            summed = groups.groupby(level=["variable", "dataset"])[["count", "missing"]].sum()
            whole = answer.xs("all", level=by)[["count", "missing"]]
            assert (summed.reindex(whole.index).fillna(0) == whole).all().all()
    for key in a.index:
        left, right = a.loc[key], b.loc[key]
        if not left.equals(right):
            # the target's value entered only through cells of at least K values
            assert left["count"] >= K or right["count"] >= K, (key, left.to_dict(),
                                                               right.to_dict())
