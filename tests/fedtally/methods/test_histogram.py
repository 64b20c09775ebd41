"""Histograms over a simulated federation, against numpy.histogram and value_counts on the
pooled rows, the small-cell rule, and Exareme2's expected categorical histograms."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from fedtally.methods.histogram import histogram
from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import DataModel, Variable
from support import EXAREME2

EXACT = Policy(min_row_count=1, small_cell_threshold=1)
GROUPS = ("lo", "hi")


def _pooled() -> pd.DataFrame:
    rng = np.random.default_rng(404)
    n = 630
    frame = pd.DataFrame({
        "x": rng.normal(10.0, 3.0, size=n),
        "age": rng.integers(20, 90, size=n),
        "sex": rng.choice(["F", "M"], n),
        "group": rng.choice(GROUPS, n, p=[0.6, 0.4]),
    })
    for column, k in (("x", 25), ("sex", 15), ("group", 11)):
        frame.loc[rng.choice(n, k, replace=False), column] = None
    return frame


POOLED = _pooled()


def _parts(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {f"node{i}": frame.iloc[i::3].reset_index(drop=True) for i in range(3)}


def _model() -> DataModel:
    """Declared bounds for ``age`` only (``x`` has none); a level no row holds for sex;
    the groups in a non-alphabetical order."""
    parts = _parts(POOLED)
    frame = pd.concat(parts.values(), ignore_index=True).assign(
        dataset=np.repeat(list(parts), [len(p) for p in parts.values()]))
    model = DataModel.infer(frame, code="hist", version="1")
    variables = dict(model.variables)
    variables["x"] = Variable("x", "x", "real", False)
    variables["age"] = Variable("age", "age", "int", False, min=0, max=120)
    variables["sex"] = Variable("sex", "sex", "text", True, ("F", "M", "U"))
    variables["group"] = Variable("group", "group", "text", True, GROUPS)
    return dataclasses.replace(model, variables=variables)


MODEL = _model()
FED = SimulatedFederation(_parts(POOLED), MODEL, policy=EXACT, seed=9)


@pytest.mark.parametrize("bins", [1, 7, 20])
def test_numeric_bins_match_numpy(bins: int) -> None:
    values = POOLED["x"].dropna().to_numpy()
    table = histogram(FED, "x", bins=bins, range=(2.5, 17.5))
    counts, edges = np.histogram(values, bins=bins, range=(2.5, 17.5))
    assert list(table.columns) == ["bin_start", "bin_end", "count"]
    assert table["count"].tolist() == counts.tolist()
    assert table["bin_start"].tolist() == edges[:-1].tolist()
    assert table["bin_end"].tolist() == edges[1:].tolist()
    assert table.attrs["edges"] == edges.tolist()
    outside = int(((values < 2.5) | (values > 17.5)).sum())
    assert table.attrs["excluded"] == outside + 25
    assert table.attrs["suppressed"]["cells"] == 0
    assert table.attrs["privacy"] == {"mode": "exact"}


def test_the_last_bin_is_closed_and_edges_may_be_given() -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 2.0, 3.0, 4.0] * 3})
    fed = SimulatedFederation(_parts(frame), policy=EXACT, seed=1)
    table = histogram(fed, "x", bins=4, range=(0.0, 3.0))
    assert table["count"].tolist() == np.histogram(frame.x, bins=4, range=(0, 3))[0].tolist()
    edges = [0.0, 0.5, 2.0, 4.0]
    table = histogram(fed, "x", bins=edges)
    assert table["count"].tolist() == np.histogram(frame.x, bins=edges)[0].tolist()


def test_range_defaults_to_the_declared_bounds() -> None:
    table = histogram(FED, "age", bins=12)
    counts, edges = np.histogram(POOLED["age"], bins=12, range=(0, 120))
    assert table["count"].tolist() == counts.tolist()
    assert table["bin_start"].tolist() == edges[:-1].tolist()


def test_no_range_and_no_declared_bounds_is_refused() -> None:
    with pytest.raises(QueryError, match="single patients' values"):
        histogram(FED, "x")


def test_an_empty_range_is_widened_as_numpy_does() -> None:
    table = histogram(FED, "age", bins=2, range=(50, 50))
    counts, edges = np.histogram(POOLED["age"], bins=2, range=(50, 50))
    assert table["count"].tolist() == counts.tolist()
    assert table.attrs["edges"] == edges.tolist()


def test_categories_come_from_the_data_model() -> None:
    table = histogram(FED, "sex")
    assert list(table.columns) == ["category", "count"]
    assert table["category"].tolist() == ["F", "M", "U"]
    counts = POOLED["sex"].value_counts()
    assert table["count"].tolist() == [counts["F"], counts["M"], 0]
    assert table.attrs["excluded"] == 15


def test_by_gives_one_block_per_group_level() -> None:
    table = histogram(FED, "x", bins=5, range=(0, 20), by="group")
    assert list(table.columns) == ["group", "bin_start", "bin_end", "count"]
    assert table["group"].unique().tolist() == list(GROUPS)
    for level in GROUPS:
        values = POOLED[POOLED.group == level]["x"].dropna()
        block = table[table.group == level]
        assert block["count"].tolist() == np.histogram(values, bins=5, range=(0, 20))[0].tolist()
    by_sex = histogram(FED, "sex", by="group", filters="age >= 40")
    rows = POOLED[POOLED.age >= 40]
    for level in GROUPS:
        counts = rows[rows.group == level]["sex"].value_counts()
        block = by_sex[by_sex.group == level]
        assert block["count"].tolist() == [counts.get("F", 0), counts.get("M", 0), 0]


def test_small_cells_are_zeroed_and_reported() -> None:
    guarded = SimulatedFederation(_parts(POOLED), MODEL, seed=9)  # threshold 10 per node
    exact = histogram(FED, "x", bins=10, range=(2.5, 17.5))
    table = histogram(guarded, "x", bins=10, range=(2.5, 17.5))
    suppressed = table.attrs["suppressed"]
    assert suppressed["cells"] > 0 and "read 0" in suppressed["note"]
    assert table.attrs["federation"]["cells_below_threshold"] == suppressed["cells"]
    assert (table["count"] <= exact["count"]).all()
    assert (table["count"] < exact["count"]).any()
    # a bin with fewer than 10 rows at every node reads 0
    assert table["count"].iloc[0] == 0 < exact["count"].iloc[0]


def test_degenerate_and_bad_inputs() -> None:
    with pytest.raises(DegenerateInput, match="no rows"):
        histogram(FED, "x", range=(0, 1), filters="age > 200")
    with pytest.raises(QueryError, match="range"):
        histogram(FED, "sex", range=(0, 1))
    with pytest.raises(QueryError, match="range"):
        histogram(FED, "x", range=(5, 1))
    with pytest.raises(QueryError, match="bins"):
        histogram(FED, "x", bins=0, range=(0, 1))
    with pytest.raises(QueryError, match="bin edges"):
        histogram(FED, "x", bins=[1.0, 1.0])
    with pytest.raises(QueryError, match="by must be"):
        histogram(FED, "x", range=(0, 1), by="age")
    with pytest.raises(QueryError, match="unknown variable"):
        histogram(FED, "nope")


# --- Exareme2's expected categorical histograms --------------------------------------------


@pytest.fixture(scope="module")
def own_dementia(dementia_split: tuple[DataModel, dict[str, pd.DataFrame]]
                 ) -> SimulatedFederation:
    """The shared split as a federation with this file's policy."""
    model, frames = dementia_split
    return SimulatedFederation(frames, model, policy=EXACT, seed=3)


def test_exareme2_categorical_histograms(own_dementia: SimulatedFederation) -> None:
    """Exareme2 writes a zero count as null, and with a grouping variable first gives the
    whole histogram (rows where the grouping variable is present), then one per level.
    Numeric cases are not comparable: Exareme2 lays its bins between the data's exact
    minimum and maximum, which are patients' values and which we do not release."""
    path = EXAREME2 / "expected" / "multiple_histograms_expected.json"
    if not path.exists():
        pytest.skip(f"reference data {path} is absent")
    fed = own_dementia
    checked = 0
    for case in json.loads(path.read_text())["test_cases"]:
        data = case["input"]["inputdata"]
        variable, groups = data["y"][0], data["x"] or []
        if fed.model().variable(variable).is_numeric or len(groups) > 1 or data["filters"]:
            continue
        by = groups[0] if groups else None
        if by is not None and fed.model().variable(by).is_numeric:
            continue
        table = histogram(fed, variable, by=by, datasets=data["datasets"])
        for block in case["output"]["histogram"]:
            rows = table if block["grouping_var"] is None else table[
                table[by] == block["grouping_enum"]]
            counts = rows.groupby("category", sort=False)["count"].sum()
            ours = [int(counts[c]) or None for c in block["bins"]]
            assert ours == block["counts"], (variable, by, block["grouping_enum"])
        checked += 1
    assert checked >= 5


def test_a_free_text_variable_is_refused_by_name_not_counted_as_no_rows() -> None:
    """A text variable without categories has no cells: the answer used to be "no rows"."""
    parts = _parts(POOLED.assign(note=[f"seen on day {i}" for i in range(len(POOLED))]))
    variables = {**MODEL.variables, "note": Variable("note", "note", "text", False)}
    fed = SimulatedFederation(parts, dataclasses.replace(MODEL, variables=variables),
                              policy=EXACT, seed=9)
    with pytest.raises(QueryError, match="'note' is free text"):
        histogram(fed, "note")
    with pytest.raises(QueryError, match="'note' is free text"):
        fed.contingency_table("note", "sex")
