"""Paillier mode runs the whole catalog unchanged: every public query method of
:class:`fedtally.catalog.Catalog`, run on a mask-mode and on a Paillier-mode
:class:`fedtally.SimulatedFederation` over the same rows, gives the same answer.

Both modes compute the same exact secure sum of the same node vectors (pairwise masks
cancel exactly in the ring; Paillier decrypts the exact sum modulo n and reduces it to the
ring), so every number downstream is computed from identical integers by identical code:
results are compared bit for bit, not within a tolerance. The method list is derived from
the class, so a method added to the catalog without a case here fails
``test_every_catalog_method_is_compared``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pytest

import fedtally
from fedtally import simulated
from fedtally.analyses import Analyses
from fedtally.catalog import Catalog
from fedtally.results import Statistic
from fedtally.simulated import SimulatedFederation
from fedtally.synthetic import stroke_model, stroke_registry, three_hospitals
from node.policy import Policy
from protocol.errors import ConfigurationError
from stats.datamodel import DataModel

#: a 1024-bit key: fine in memory (the simulator has no minimum; real federations need 2048)
BITS = 1024
#: public methods of the catalog that answer no query: metadata helpers, compared separately
HELPERS = frozenset({"catalog", "data_models", "datasets", "model", "receipts", "scope"})
SEED = 7

Call = Callable[[Analyses], Any]


def _exareme2(algorithm: str, y: list[str], x: list[str], **parameters: Any) -> Call:
    def call(fed: Analyses) -> Any:
        model = fed.model()
        body = {"inputdata": {"data_model": model.name,
                              "datasets": ["hosp_a", "hosp_b", "hosp_c"], "y": y, "x": x,
                              "filters": None},
                "parameters": parameters}
        return fed.run_exareme2(body, algorithm)

    return call


#: one or more calls per public query method; where an algorithm has a random-looking part
#: it is seeded by a public parameter (k-means starts from public centers and ``seed``; the
#: CV folds come from ``fold_seed`` at the nodes), so both modes see the same folds/starts
CALLS: dict[str, list[Call]] = {
    "count": [
        lambda f: f.count(),
        lambda f: f.count(filters="age > 60 and sex == 'F'", datasets=["hosp_a", "hosp_c"]),
    ],
    "descriptive_stats": [
        lambda f: f.descriptive_stats(["age", "nihss", "onset_to_door_min", "days_to_event"]),
        lambda f: f.descriptive_stats(["age", "mrs_90d"], by="sex",
                                      filters="onset_to_door_min <= 270"),
    ],
    "statistic": [lambda f: f.statistic("descriptive_stats", variables=["age", "nihss"],
                                        by="sex")],
    "histogram": [
        lambda f: f.histogram("age", bins=10),
        lambda f: f.histogram("sex", by="dataset"),
    ],
    "contingency_table": [lambda f: f.contingency_table("sex", "dataset")],
    "chi_square": [lambda f: f.chi_square("sex", "dataset")],
    "ttest_onesample": [lambda f: f.ttest_onesample("age", mu=70.0)],
    "ttest_paired": [lambda f: f.ttest_paired("nihss", "mrs_90d")],
    "ttest_independent": [
        lambda f: f.ttest_independent("age", "sex", "F", "M"),
        lambda f: f.ttest_independent("nihss", "sex", "F", "M", equal_var=False),
    ],
    "anova_oneway": [lambda f: f.anova_oneway("age", "dataset")],
    "anova_twoway": [lambda f: f.anova_twoway("nihss", "sex", "dataset")],
    "pearson_correlation": [
        lambda f: f.pearson_correlation(["age", "nihss", "onset_to_door_min"])],
    "pca": [lambda f: f.pca(["age", "nihss", "onset_to_door_min"])],
    "linear_regression": [
        lambda f: f.linear_regression("mrs_90d", ["age", "nihss", "thrombolysis", "sex"])],
    "logistic_regression": [lambda f: f.logistic_regression("death", ["age", "nihss", "sex"])],
    "linear_regression_cv": [
        lambda f: f.linear_regression_cv("mrs_90d", ["age", "nihss"], n_splits=3, fold_seed=5)],
    # a short ROC grid: each threshold is one more round (200 by default)
    "logistic_regression_cv": [
        lambda f: f.logistic_regression_cv("death", ["age", "nihss"], n_splits=3, fold_seed=5,
                                           roc_thresholds=8)],
    "kmeans": [lambda f: f.kmeans(["age", "nihss"], k=3, seed=SEED)],
    "naive_bayes_gaussian": [lambda f: f.naive_bayes_gaussian("sex", ["age", "nihss"])],
    "naive_bayes_categorical": [lambda f: f.naive_bayes_categorical("dataset", ["sex"])],
    "kaplan_meier": [lambda f: f.kaplan_meier("days_to_event", "death", by="sex",
                                              times=[30, 90, 180, 365])],
    "logrank_test": [lambda f: f.logrank_test("days_to_event", "death", "sex",
                                              times=[30, 90, 180, 365])],
    "run_exareme2": [
        _exareme2("descriptive_stats", ["age", "nihss"], []),
        _exareme2("linear_regression", ["mrs_90d"], ["age", "sex"]),
        _exareme2("logistic_regression", ["death"], ["age", "nihss"], positive_class="1"),
    ],
}
CASES = [pytest.param(name, i, id=f"{name}-{i}") for name, calls in CALLS.items()
         for i in range(len(calls))]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hospitals() -> dict[str, pd.DataFrame]:
    return three_hospitals(seed=SEED, scale=0.25)


@pytest.fixture(scope="module")
def mask(hospitals: dict[str, pd.DataFrame]) -> SimulatedFederation:
    return SimulatedFederation(hospitals, seed=SEED)


@pytest.fixture(scope="module")
def paillier(hospitals: dict[str, pd.DataFrame]) -> SimulatedFederation:
    return SimulatedFederation(hospitals, seed=SEED, protection="paillier", paillier_bits=BITS)


# --- comparing results exactly ---------------------------------------------------------------


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_same(a: Any, b: Any, where: str = "result") -> None:
    """``a`` and ``b`` are equal, bit for bit, all the way down (NaN equals NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
        assert_same(dict(a.attrs), dict(b.attrs), f"{where}.attrs")
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True, obj=where)
        assert_same(dict(a.attrs), dict(b.attrs), f"{where}.attrs")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, Mapping):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float | np.floating):
        assert _same_float(float(a), float(b)), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, bool | int | str | bytes | Fraction | np.integer | np.bool_) or a is None:
        assert a == b, f"{where}: {a!r} != {b!r}"
    else:  # pragma: no cover - a result type this helper does not know yet
        pytest.fail(f"{where}: cannot compare a {type(a).__name__}; teach assert_same")


def assert_same_statistic(a: Statistic, b: Statistic) -> None:
    """The raw totals, layout and spec agree. The reply's query id is a fresh random id per
    query (drawn after the Paillier dealer used the seeded generator, so it differs)."""
    assert a.values == b.values
    assert a.spec == b.spec
    assert a.layout == b.layout
    assert a.model == b.model
    # the replies' vectors differ by mask mode's blinding digits (verifiable totals), which
    # the values above leave out
    for name in ("participants", "survivors", "ring_bits"):
        assert getattr(a.reply, name) == getattr(b.reply, name), name
    assert a.reply.query_id != b.reply.query_id


# --- tests ----------------------------------------------------------------------------------


def test_every_catalog_method_is_compared() -> None:
    public = {name for name in dir(Catalog)
              if not name.startswith("_") and callable(getattr(Catalog, name))}
    assert HELPERS <= public, "a metadata helper was renamed: update HELPERS"
    assert set(CALLS) == public - HELPERS


def test_the_modes_are_what_they_say(mask: SimulatedFederation,
                                     paillier: SimulatedFederation) -> None:
    assert mask.protection == "mask"
    assert paillier.protection == "paillier"
    assert mask._paillier is None
    key, shares, _ = paillier._paillier
    assert key.threshold.public.n.bit_length() == BITS
    assert key.threshold.threshold == 3  # three nodes, one colluder by default: 3 > (3 + 1)/2
    assert sorted(shares) == ["hosp_a", "hosp_b", "hosp_c"]


def test_paillier_mode_runs_paillier_rounds_only(mask: SimulatedFederation,
                                                 paillier: SimulatedFederation,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparisons below are not vacuous: each federation takes its own kind of round."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the wrong kind of round")

    with monkeypatch.context() as patch:
        patch.setattr(simulated, "run_round", refuse)
        assert paillier.count() > 0
        with pytest.raises(AssertionError, match="wrong kind"):
            mask.count()
    with monkeypatch.context() as patch:
        patch.setattr(simulated, "run_paillier_round", refuse)
        assert mask.count() > 0
        with pytest.raises(AssertionError, match="wrong kind"):
            paillier.count()


@pytest.mark.parametrize(("method", "index"), CASES)
def test_paillier_gives_the_same_answer_as_mask(mask: SimulatedFederation,
                                                paillier: SimulatedFederation,
                                                method: str, index: int) -> None:
    call = CALLS[method][index]
    expected = call(mask)
    got = call(paillier)
    if method == "statistic":
        assert_same_statistic(expected, got)
    else:
        assert_same(expected, got)
    if isinstance(expected, pd.DataFrame) and "federation" in expected.attrs:
        assert got.attrs["federation"]["nodes_answered"] == 3


def test_exact_answers_are_the_pooled_rows(paillier: SimulatedFederation,
                                           hospitals: dict[str, pd.DataFrame]) -> None:
    """Not only the same as mask mode: the right numbers."""
    rows = pd.concat(hospitals.values(), ignore_index=True)
    assert paillier.count() == len(rows)
    stats = paillier.descriptive_stats(["age", "nihss"])
    for variable in ("age", "nihss"):
        got = stats.loc[(variable, "all")]
        assert got["count"] == rows[variable].count()
        assert got["mean"] == pytest.approx(rows[variable].mean(), rel=1e-12)
        assert got["std"] == pytest.approx(rows[variable].std(), rel=1e-12)


def test_metadata_helpers_agree(mask: SimulatedFederation,
                                paillier: SimulatedFederation) -> None:
    pd.testing.assert_frame_equal(mask.datasets(), paillier.datasets())
    assert mask.catalog() == paillier.catalog()
    assert mask.model() == paillier.model()
    assert mask.data_models() == paillier.data_models()


# --- differential privacy -----------------------------------------------------------------


@pytest.fixture(scope="module")
def dp_pair(hospitals: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, SimulatedFederation]:
    policy = Policy.from_dict({"budgets": {"alice": {"*": {"rho": 1.0}}}})
    feds = {}
    for protection in ("mask", "paillier"):
        ledgers = tmp_path_factory.mktemp(f"ledgers-{protection}")
        feds[protection] = SimulatedFederation(
            hospitals, stroke_model(), seed=SEED, policy=policy, ledger_dir=ledgers, protection=protection,
            **({"paillier_bits": BITS} if protection == "paillier" else {}))
    return feds


def test_dp_count_and_descriptive_stats_spend_budget_in_both_modes(
        dp_pair: dict[str, SimulatedFederation], hospitals: dict[str, pd.DataFrame]) -> None:
    """The noise is fresh randomness at each node, so the values differ between modes;
    what must agree is the shape, the noise scale and what each node spent."""
    rows = sum(len(frame) for frame in hospitals.values())
    released: dict[str, Any] = {}
    for protection, fed in dp_pair.items():
        assert fed.budget()["spent_rho"].sum() == 0
        count = fed.count(privacy=fedtally.DP(rho=0.25))
        assert isinstance(count, fedtally.NoisyValue)
        assert abs(count.value - rows) < 10 * count.noise_std
        assert count.privacy["mode"] == "dp"
        assert count.privacy["rho"] == pytest.approx(0.25)
        stats = fed.descriptive_stats(["age", "nihss"], privacy=fedtally.DP(rho=0.25))
        assert {"count_noise_std", "mean_ci_low", "mean_ci_high"} <= set(stats.columns)
        assert stats.attrs["privacy"]["rho"] == pytest.approx(0.25)
        budget = fed.budget()
        # each node lists its "*" grant (what an unnamed dataset gets) beside the dataset spent on
        assert set(budget.index.get_level_values("dataset")) == {"*", *hospitals}
        budget = budget.drop("*", level="dataset")
        assert budget["spent_rho"].tolist() == pytest.approx([0.5] * 3), protection
        assert budget["remaining_rho"].tolist() == pytest.approx([0.5] * 3), protection
        released[protection] = (count, stats)
    (mask_count, mask_stats), (pail_count, pail_stats) = released["mask"], released["paillier"]
    assert mask_count.noise_std == pail_count.noise_std
    assert mask_count.federation == pail_count.federation
    pd.testing.assert_series_equal(mask_stats["count_noise_std"], pail_stats["count_noise_std"])
    pd.testing.assert_frame_equal(dp_pair["mask"].budget(), dp_pair["paillier"].budget())
    for fed in dp_pair.values():  # the limit is enforced the same way
        with pytest.raises(fedtally.BudgetExhausted):
            fed.count(privacy=fedtally.DP(rho=0.75))


# --- configurations --------------------------------------------------------------------------


def test_five_nodes_with_a_decryption_threshold_of_three() -> None:
    names = [f"site_{i}" for i in range(5)]
    data = {name: stroke_registry(name, 120 + 20 * i, 70.0, 7.0, 0.2, seed=100 + i)
            for i, name in enumerate(names)}
    model = DataModel.infer(pd.concat(data.values(), ignore_index=True), code="five",
                            version="1")
    # 3 of 5 is a quorum only without colluders (c = 0): with c = 1 it must exceed 3
    paillier = SimulatedFederation(data, model, seed=3, protection="paillier",
                                   paillier_bits=BITS, decryption_threshold=3,
                                   max_colluding_nodes=0)
    key, shares, _ = paillier._paillier
    assert key.threshold.threshold == 3
    assert len(shares) == 5
    mask = SimulatedFederation(data, model, seed=3)
    assert paillier.count() == mask.count() == sum(len(f) for f in data.values())
    assert_same(mask.descriptive_stats(["age", "nihss"], by="sex"),
                paillier.descriptive_stats(["age", "nihss"], by="sex"))
    assert_same(mask.linear_regression("nihss", ["age", "sex"]),
                paillier.linear_regression("nihss", ["age", "sex"]))


def test_default_threshold_of_five_nodes_holds_one_colluder_off() -> None:
    data = {f"site_{i}": stroke_registry(f"site_{i}", 40, 70.0, 7.0, 0.2, seed=i)
            for i in range(5)}
    fed = SimulatedFederation(data, seed=1, protection="paillier", paillier_bits=BITS)
    assert fed._paillier[0].threshold.threshold == 4  # more than (5 + 1)/2
    with pytest.raises(ConfigurationError, match=r"in \[4, 5\] for 5 nodes and 1 colluding"):
        SimulatedFederation(data, seed=1, protection="paillier", paillier_bits=BITS,
                            decryption_threshold=3)


def test_the_simulator_derives_thresholds_as_a_federation_does(
        hospitals: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    import fedtally.simulated as simulated

    seen = []
    real = simulated.run_round
    monkeypatch.setattr(simulated, "run_round",
                        lambda values, params, **kw: seen.append(params) or real(values, params,
                                                                                 **kw))
    SimulatedFederation(hospitals, seed=1).count()
    SimulatedFederation(hospitals, seed=1, max_colluding_nodes=0).count()
    assert [(p.threshold, p.max_colluding) for p in seen] == [(3, 1), (2, 0)]
    two = dict(list(hospitals.items())[:2])
    with pytest.raises(ConfigurationError, match="at least 3 nodes"):
        SimulatedFederation(two, seed=1)
    assert SimulatedFederation(two, seed=1, max_colluding_nodes=0).count() == \
        sum(len(f) for f in two.values())
    with pytest.raises(ConfigurationError, match="max_colluding_nodes"):
        SimulatedFederation(hospitals, seed=1, max_colluding_nodes=-1)


def test_a_decryption_threshold_needs_paillier(hospitals: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ConfigurationError, match="Paillier"):
        SimulatedFederation(hospitals, seed=1, protection="mask", decryption_threshold=2)
    with pytest.raises(ConfigurationError, match="Paillier"):
        SimulatedFederation(hospitals, seed=1, decryption_threshold=2)


@pytest.mark.parametrize("protection", ["PAILLIER", "paillier ", "he", "", "none"])
def test_an_unknown_protection_is_refused(hospitals: dict[str, pd.DataFrame],
                                          protection: str) -> None:
    with pytest.raises(ConfigurationError, match="protection must be one of mask, paillier"):
        SimulatedFederation(hospitals, seed=1, protection=protection)


# --- the simulator validates its Paillier options as init does ------------------------------


@pytest.mark.parametrize("threshold", [0, 1, 4, True, 2.5])
def test_an_invalid_decryption_threshold_is_a_configuration_error(
        hospitals: dict[str, pd.DataFrame], threshold: Any) -> None:
    with pytest.raises(ConfigurationError, match="decryption threshold"):
        SimulatedFederation(hospitals, seed=1, protection="paillier", paillier_bits=BITS,
                            decryption_threshold=threshold)


@pytest.mark.parametrize("bits", [512, 1023])
def test_an_invalid_key_size_is_a_configuration_error(hospitals: dict[str, pd.DataFrame],
                                                      bits: int) -> None:
    with pytest.raises(ConfigurationError):
        SimulatedFederation(hospitals, seed=1, protection="paillier", paillier_bits=bits)


def test_the_comparison_is_not_vacuous(mask: SimulatedFederation) -> None:
    result = mask.linear_regression("mrs_90d", ["age", "nihss"])
    nudged = dataclasses.replace(result, rsquared=np.nextafter(result.rsquared, 1.0))
    with pytest.raises(AssertionError, match="rsquared"):
        assert_same(result, nudged)
    params = result.params.copy()
    params.iloc[0] = np.nextafter(params.iloc[0], np.inf)
    with pytest.raises(AssertionError):
        assert_same(result, dataclasses.replace(result, params=params))
    stats = mask.descriptive_stats(["age"])
    other = stats.copy()
    other.attrs["federation"] = {**stats.attrs["federation"], "nodes_answered": 2}
    with pytest.raises(AssertionError, match="attrs"):
        assert_same(stats, other)
