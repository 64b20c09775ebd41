"""Data a new user brings, through a real local federation (issue 13, item 2): files as
pandas, numpy and spreadsheets write them. A 17-digit float CSV works with an inferred
model; a semicolon CSV and a renamed header are refused before anything is served."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.weightstats import DescrStatsW

import fedtally
from fedtally.synthetic import stroke_model, three_hospitals


def test_csv_files_of_17_digit_floats_work_with_an_inferred_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference and validation used two float parsers: the extreme rows of a %.17g CSV
    were "above the maximum" and the node refused to start. Here pandas and numpy write
    the files (and a DataFrame holds float32), and every value reads back as written; the
    variable sits at 1e6, so its variance also needs the public centring. The files and the
    workdir are named relative to the current folder (a relative workdir once left the
    processes, which run in it, looking for lf/aggregator.json inside it)."""
    rng = np.random.default_rng(17)
    frames = {name: pd.DataFrame({"x": 1e6 + rng.normal(0, 1, 400),
                                  "y": rng.normal(5, 2, 400)}) for name in "abc"}
    frames["a"].to_csv(tmp_path / "a.csv", index=False, float_format="%.17g")
    np.savetxt(tmp_path / "b.csv", frames["b"].to_numpy(), fmt="%.17g", delimiter=",",
               header="x,y", comments="")
    frames["c"]["y"] = frames["c"]["y"].astype("float32")
    monkeypatch.chdir(tmp_path)
    data = {"a": "a.csv", "b": Path("b.csv"), "c": frames["c"]}
    pooled = pd.concat([frames["a"], frames["b"], frames["c"].astype("float64")],
                       ignore_index=True)
    with fedtally.local_federation(data, workdir="fed") as fed:
        stats = fed.descriptive_stats(["x", "y"])
        fit = fed.linear_regression("y", ["x"])
    for variable in ("x", "y"):
        reference = DescrStatsW(pooled[variable].to_numpy())
        n = len(pooled)
        assert stats.loc[(variable, "all"), "count"] == n
        assert stats.loc[(variable, "all"), "mean"] == pytest.approx(reference.mean, rel=1e-9)
        assert stats.loc[(variable, "all"), "std"] == pytest.approx(
            reference.std * math.sqrt(n / (n - 1)), rel=1e-9)
    reference = sm.OLS(pooled["y"], sm.add_constant(pooled["x"])).fit()
    np.testing.assert_allclose(fit.params.to_numpy(), reference.params.to_numpy(), rtol=1e-9)


def test_a_semicolon_csv_and_a_renamed_header_are_refused_before_serving(
        tmp_path: Path) -> None:
    """Both used to pass as files whose variables are all missing: count(sex == 'F') then
    answered 491 for a true 761."""
    hospitals = three_hospitals(scale=0.1)
    frame = hospitals["hosp_b"]
    semicolons = tmp_path / "semicolons.csv"
    frame.to_csv(semicolons, index=False, sep=";")
    with pytest.raises(fedtally.DataError, match=r"hosp_b: .* separated by ';'"):
        with fedtally.local_federation({"hosp_a": hospitals["hosp_a"], "hosp_b": semicolons},
                                       workdir=tmp_path / "one", max_colluding_nodes=0):
            pass
    renamed = tmp_path / "renamed.csv"
    frame.rename(columns={"sex": "gender"}).to_csv(renamed, index=False)
    with pytest.raises(fedtally.DataError,
                       match=r"(?s)hosp_b exited at start-up.*'gender'.*renamed header"):
        with fedtally.local_federation({"hosp_a": hospitals["hosp_a"], "hosp_b": renamed},
                                       data_model=stroke_model(), workdir=tmp_path / "two",
                                       max_colluding_nodes=0):
            pass
