"""Issue 13: DP post-processing and noise warnings, budgets in (epsilon, delta), "did you
mean" for every name, summaries, concise reprs, plots and progress bars (in-process
federation: the same node code and secure-sum rounds, no sockets)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from PIL import Image

import fedtally
from fedtally.synthetic import stroke_model, three_hospitals
from node.policy import Policy

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return three_hospitals(seed=5, scale=0.3)


@pytest.fixture(scope="module")
def fed(data: dict[str, pd.DataFrame]) -> fedtally.SimulatedFederation:
    return fedtally.SimulatedFederation(data, stroke_model(), seed=3,
                                        budget=fedtally.DP(rho=1e6))


def test_dp_answers_are_post_processed(fed: fedtally.SimulatedFederation) -> None:
    # the case: a tiny epsilon on a small cohort gave a mean of 130 for bounds 18-100,
    # negative missing counts and a std of 0.000, with no warning
    tiny = fedtally.DP(epsilon=0.1, delta=1e-6)
    for _ in range(5):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            count = fed.count(filters="age > 95", privacy=tiny)
            stats = fed.descriptive_stats(["age", "nihss"], filters="age > 95", privacy=tiny)
        assert isinstance(count.value, int) and count.value >= 0
        assert count.ci()[0] >= 0
        assert (stats["count"] >= 0).all() and (stats["missing"] >= 0).all()
        assert str(stats["count"].dtype) == "int64"
        for variable, (low, high) in {"age": (18, 100), "nihss": (0, 42)}.items():
            rows = stats.loc[variable]
            means = rows["mean"].dropna()
            assert ((means >= low) & (means <= high)).all()
            ends = pd.concat([rows["mean_ci_low"], rows["mean_ci_high"]]).dropna()
            assert ((ends >= low) & (ends <= high)).all()
            assert (rows["std"].dropna() >= 0).all()
            assert (rows["std"].dropna() <= (high - low) / 2 * math.sqrt(2)).all()
        # noise that dominates is said so, from the released values and the noise scale
        assert any(issubclass(w.category, fedtally.NoiseDominates) for w in caught)
    # a precise answer gives no such warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", fedtally.NoiseDominates)
        big = fed.count(privacy=fedtally.DP(epsilon=5, delta=1e-6))
    # count() adds one released count per dataset
    assert big.noise_std == pytest.approx(math.sqrt(3) * big.privacy["count_noise_std"])


def test_dp_histogram_counts_are_non_negative_integers(fed: fedtally.SimulatedFederation
                                                       ) -> None:
    table = fed.histogram("age", bins=20, privacy=fedtally.DP(epsilon=0.05, delta=1e-6))
    assert str(table["count"].dtype) == "int64" and (table["count"] >= 0).all()
    assert (table["count"] == table["noisy_count"].round().clip(lower=0)).all()
    assert (table["ci_low"] >= 0).all()


def test_budgets_in_epsilon_delta_and_listed_before_spending(
        data: dict[str, pd.DataFrame]) -> None:
    policy = Policy.from_dict({"budgets": {"alice": {"*": {"epsilon": 2, "delta": 1e-6},
                                                     "hosp_a": {"rho": 0.3}}}})
    sim = fedtally.SimulatedFederation(data, stroke_model(), policy=policy, seed=1)
    granted = sim.budget()
    # every granted budget, before any spending: "*" and the named dataset, at every node
    assert set(granted.index.get_level_values("dataset")) == {"*", "hosp_a"}
    assert len(granted) == 6 and (granted["spent_rho"] == 0).all()
    star = granted.xs("*", level="dataset")
    assert star["limit_epsilon"].tolist() == pytest.approx([2.0] * 3, rel=1e-3)
    assert granted.attrs["delta"] == 1e-6
    with pytest.raises(fedtally.ConfigurationError, match="epsilon"):
        Policy.from_dict({"budgets": {"alice": {"*": {"epsilon": 1}}}})
    with pytest.raises(fedtally.ConfigurationError, match="delta"):
        Policy.from_dict({"budgets": {"alice": {"*": {"epsilon": 1, "delta": 2}}}})


@pytest.mark.parametrize("call, hint", [
    (lambda f: f.descriptive_stats(["agee"]), "'age'"),
    (lambda f: f.histogram("Sex"), "'sex'"),
    (lambda f: f.linear_regression("nihss", ["age", "sexx"]), "'sex'"),
    (lambda f: f.count(datasets=["hosp_d"]), "hosp_"),
    (lambda f: f.count(filters="sex == 'f'"), "'F'"),
    (lambda f: f.count(data_model="strok:1"), "stroke"),
    (lambda f: f.ttest_independent("age", "sex", "F", "m"), "'M'"),
    (lambda f: f.kaplan_meier("days_to_event", "deaht", times=[0, 365]), "'death'"),
])
def test_every_name_gets_a_did_you_mean(fed: fedtally.SimulatedFederation, call: object,
                                        hint: str) -> None:
    with pytest.raises(fedtally.QueryError, match="did you mean") as caught:
        call(fed)  # type: ignore[operator]
    assert hint in str(caught.value)


def test_an_empty_filter_result_raises_query_error(fed: fedtally.SimulatedFederation) -> None:
    with pytest.raises(fedtally.QueryError, match="no rows"):
        fed.descriptive_stats(["age"], filters="age > 200")


def test_summaries_and_reprs(fed: fedtally.SimulatedFederation) -> None:
    results = {
        "count": fed.count(),
        "descriptive": fed.descriptive_stats(["age"], by="sex"),
        "histogram": fed.histogram("age", bins=8),
        "ols": fed.linear_regression("nihss", ["age", "sex"]),
        "logit": fed.logistic_regression("death", ["age", "nihss"]),
        "ttest": fed.ttest_onesample("age", mu=60),
        "chi2": fed.chi_square("sex", "dataset"),
        "anova": fed.anova_oneway("nihss", "sex"),
        "pearson": fed.pearson_correlation(["age", "nihss"]),
        "pca": fed.pca(["age", "nihss"]),
        "km": fed.kaplan_meier("days_to_event", "death", times=[0, 90, 180, 270, 365]),
        "logrank": fed.logrank_test("days_to_event", "death", "sex",
                                    times=[0, 90, 180, 270, 365]),
        "kmeans": fed.kmeans(["age", "nihss"], k=2),
        "dp": fed.count(privacy=fedtally.DP(epsilon=1, delta=1e-6)),
    }
    for name, result in results.items():
        text = result.summary()
        assert "Federation: 3 of 3 nodes answered" in text, name
        assert "Privacy:" in text, name
        assert len(repr(result)) < 2000, name
    ols = results["ols"].summary()
    for part in ("OLS Regression Results", "R-squared", "coef", "std err", "P>|t|", "age",
                 "sex[T.M]"):
        assert part in ols
    assert repr(results["ols"]).startswith("<LinearRegressionResult dependent_var=nihss")
    assert len(repr(results["ols"])) < 200
    assert "differential privacy" in results["dp"].summary()
    assert "exact" in results["count"].summary()
    assert str(results["count"]) == str(int(results["count"]))


def _png(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_plots_render_to_png(fed: fedtally.SimulatedFederation, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    fed.histogram("age", bins=10).plot(path=tmp_path / "hist.png")
    fed.histogram("sex", by="dataset").plot(path=tmp_path / "bars.png")
    km = fed.kaplan_meier("days_to_event", "death", by="sex", times=list(range(0, 366, 30)))
    ax = km.plot(path=tmp_path / "km.png")
    assert len(ax.collections) == 2  # one confidence band per group
    fed.pca(["age", "nihss", "glucose"] if "glucose" in fed.model().variables
            else ["age", "nihss"]).plot(path=tmp_path / "scree.png")
    for name in ("hist", "bars", "km", "scree"):
        assert _png(tmp_path / f"{name}.png")[0] > 300
    plt.close("all")


def test_progress_bar_over_newton_rounds(fed: fedtally.SimulatedFederation,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    result = fed.logistic_regression("death", ["age"], progress=True)
    err = capsys.readouterr().err
    assert "logistic_regression" in err and f"{result.n_iterations}" in err
