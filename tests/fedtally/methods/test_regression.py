"""Linear and logistic regression (and their cross-validation) over a simulated federation,
against statsmodels (and plain numpy for CV) on the pooled rows."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from fedtally.methods.linear_regression import linear_regression
from fedtally.methods.linear_regression_cv import linear_regression_cv
from fedtally.methods.logistic_regression import logistic_regression
from fedtally.methods.logistic_regression_cv import logistic_regression_cv
from fedtally.methods.newton import Evaluation, Newton
from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from protocol.errors import DegenerateInput, QueryError
from stats.kinds.frame import fold_numbers

RTOL = 1e-9
LOGIT_RTOL = 1e-8
SIZES = {"hosp_a": 700, "hosp_b": 900, "hosp_c": 1100}


def make_data(seed: int = 7) -> dict[str, pd.DataFrame]:
    """Three nodes; missing values in predictors and outcomes; categorical predictors."""
    rng = np.random.default_rng(seed)
    frames = {}
    for i, (name, n) in enumerate(SIZES.items()):
        age = rng.normal(55 + 3 * i, 12, n)
        bmi = rng.normal(26, 4, n)
        sex = rng.choice(["F", "M"], n)
        site = rng.choice(["north", "south", "west"], n, p=[0.5, 0.3, 0.2])
        male, south, west = sex == "M", site == "south", site == "west"
        sbp = 90 + 0.6 * age + 0.8 * bmi + 5 * male - 3 * south + 2 * west \
            + rng.normal(0, 9, n)
        eta = -9 + 0.08 * age + 0.12 * bmi + 0.5 * male - 0.4 * south + 0.3 * west
        stroke = rng.random(n) < 1 / (1 + np.exp(-eta))
        frame = pd.DataFrame({"age": age, "bmi": bmi, "sex": sex, "site": site, "sbp": sbp,
                              "stroke": np.where(stroke, "yes", "no"),
                              "event": stroke.astype(np.int64),
                              "dataset": np.where(rng.random(n) < 0.5, f"{name}_1",
                                                  f"{name}_2")})
        frame["z"] = rng.normal(0, 1, n)
        frame.loc[rng.random(n) < 0.05, "bmi"] = np.nan
        frame.loc[rng.random(n) < 0.03, "sbp"] = np.nan
        frame.loc[rng.random(n) < 0.03, "stroke"] = None
        frame.loc[rng.random(n) < 0.02, "site"] = None
        frames[name] = frame
    return frames


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return make_data()


@pytest.fixture(scope="module")
def fed(data: dict[str, pd.DataFrame]) -> SimulatedFederation:
    return SimulatedFederation(data, seed=11)


@pytest.fixture(scope="module")
def pooled(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(data.values(), ignore_index=True)
    frame["stroke01"] = (frame["stroke"] == "yes").astype(float)
    frame.loc[frame["stroke"].isna(), "stroke01"] = np.nan
    return frame


def close(ours: pd.Series | pd.DataFrame | float, ref: pd.Series | pd.DataFrame | float,
          rtol: float = RTOL) -> None:
    if isinstance(ours, pd.Series):
        ref = ref.loc[ours.index]  # statsmodels orders categorical terms first
        np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), rtol=rtol, atol=0)
    elif isinstance(ours, pd.DataFrame):
        ref = ref.loc[ours.index, ours.columns]
        np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), rtol=rtol, atol=0)
    else:
        assert ours == pytest.approx(ref, rel=rtol, abs=0)


# --- linear regression ---------------------------------------------------------------------


def check_ols(ours, ref, rtol: float = RTOL) -> None:
    assert list(ours.params.index)[0] == "Intercept"
    for name in ("params", "bse", "tvalues"):
        close(getattr(ours, name), getattr(ref, name), rtol)
    close(ours.pvalues, ref.pvalues, 1e-7)  # p-values amplify the t error by about t^2
    close(ours.conf_int(), ref.conf_int(), rtol)
    close(ours.conf_int(alpha=0.1), ref.conf_int(alpha=0.1), rtol)
    close(ours.cov_params(), ref.cov_params(), rtol)
    for name in ("rsquared", "rsquared_adj", "fvalue", "ssr", "ess", "centered_tss",
                 "mse_resid", "llf", "aic", "bic"):
        close(getattr(ours, name), getattr(ref, name), rtol)
    close(ours.f_pvalue, ref.f_pvalue, 1e-6)
    close(ours.rse, math.sqrt(ref.scale), rtol)
    assert ours.nobs == ref.nobs and isinstance(ours.nobs, int)
    assert ours.df_resid == ref.df_resid and ours.df_model == ref.df_model
    assert ours.privacy == {"mode": "exact"}


def test_linear_matches_statsmodels(fed, pooled) -> None:
    ours = linear_regression(fed, "sbp", ["age", "bmi", "sex", "site"])
    ref = smf.ols("sbp ~ age + bmi + sex + site", pooled).fit()
    check_ols(ours, ref)
    assert list(ours.params.index) == ["Intercept", "age", "bmi", "sex[T.M]", "site[T.south]",
                                       "site[T.west]"]
    assert ours.federation["nodes_contributing"] == 3
    assert ours.dependent_var == "sbp"


def test_linear_filters_and_datasets(fed, pooled) -> None:
    chosen = ["hosp_a_1", "hosp_b_2", "hosp_c_1", "hosp_c_2"]
    ours = linear_regression(fed, "sbp", ["age", "site"], datasets=chosen,
                             filters="age > 50 and sex == 'F'")
    rows = pooled[pooled["dataset"].isin(chosen) & (pooled["age"] > 50) & (pooled["sex"] == "F")]
    check_ols(ours, smf.ols("sbp ~ age + site", rows).fit())


def test_linear_absent_levels_follow_patsy(fed, pooled) -> None:
    """A level with no selected rows is left out; an absent reference level hands over to
    the first present one (as patsy codes the pooled rows)."""
    only_south_west = "site in ['south', 'west']"
    ours = linear_regression(fed, "sbp", ["age", "site"], filters=only_south_west)
    rows = pooled[pooled["site"].isin(["south", "west"])]
    ref = smf.ols("sbp ~ age + site", rows).fit()
    assert list(ours.params.index) == ["Intercept", "age", "site[T.west]"]
    check_ols(ours, ref)
    ours = linear_regression(fed, "sbp", ["age", "site"], filters="site != 'south'")
    assert list(ours.params.index) == ["Intercept", "age", "site[T.west]"]
    check_ols(ours, smf.ols("sbp ~ age + site", pooled[pooled["site"] != "south"]).fit())


def test_linear_single_predictor_string_x(fed, pooled) -> None:
    ours = linear_regression(fed, "sbp", "age")
    check_ols(ours, smf.ols("sbp ~ age", pooled).fit())


def test_linear_large_offsets_stay_exact() -> None:
    """Values far from zero (a date-like covariate) lose nothing: the sums are exact and
    the algebra rational."""
    rng = np.random.default_rng(3)
    frames = {}
    for name in ("a", "b"):
        t = 1e6 + rng.uniform(0, 1000, 400)
        frames[name] = pd.DataFrame({"t": t, "y": 5 + 2e-3 * (t - 1e6) + rng.normal(0, 1, 400)})
    fed = SimulatedFederation(frames, seed=2, max_colluding_nodes=0)  # two nodes
    ours = linear_regression(fed, "y", ["t"])
    ref = smf.ols("y ~ t", pd.concat(frames.values(), ignore_index=True)).fit()
    close(ours.params, ref.params, 1e-7)  # statsmodels' own pinv limits the agreement here
    close(ours.bse, ref.bse, 1e-7)


@pytest.mark.parametrize(("y", "x", "filters", "message"), [
    ("sbp", ["age", "bmi"], "age > 1000", "no complete rows"),
    ("sbp", ["age", "age2"], None, "age2 is constant or a linear combination"),
    ("sbp", ["age", "const"], None, "const is constant"),
    ("sbp", ["age", "zero"], None, "zero is zero on every row"),
    ("sbp", ["age", "site"], "site == 'west'", "'site' takes a single level"),
    ("flat", ["age"], None, "outcome is constant"),
    ("exact", ["age"], None, "fit the outcome exactly"),
])
def test_linear_degenerate(y, x, filters, message) -> None:
    frames = make_data(5)
    for frame in frames.values():
        frame["age2"] = 2 * frame["age"] + 1
        frame["const"] = 0.1
        frame["zero"] = 0.0
        frame["flat"] = 0.3
        frame["exact"] = 3 * frame["age"] - 2
    fed = SimulatedFederation(frames, seed=4)
    with pytest.raises(DegenerateInput, match=message):
        linear_regression(fed, y, x, filters=filters)


def test_linear_zero_residual_df() -> None:
    frames = {f"n{i}": pd.DataFrame({"x": [float(i), i + 1.5], "y": [1.0, 2.0 + i]})
              for i in range(2)}
    fed = SimulatedFederation(frames, policy=Policy(min_row_count=1, small_cell_threshold=1),
                              seed=1, max_colluding_nodes=0)
    with pytest.raises(DegenerateInput, match="no residual degrees of freedom"):
        linear_regression(fed, "y", ["x"], filters="x < 1.2")


def test_linear_small_nodes_are_left_out(data) -> None:
    """A node whose cohort is under min_row_count contributes nothing; the fit is that of
    the others, and federation says so."""
    fed = SimulatedFederation(data, seed=3)
    ours = linear_regression(fed, "sbp", ["age"], filters="age > 85")
    pooled = pd.concat(data.values(), ignore_index=True)
    counts = {n: int(((f["age"] > 85) & f["sbp"].notna()).sum()) for n, f in data.items()}
    kept = [n for n, c in counts.items() if c >= 10]
    assert ours.federation["nodes_contributing"] == len(kept) < 3
    rows = pd.concat([data[n] for n in kept], ignore_index=True)
    check_ols(ours, smf.ols("sbp ~ age", rows[rows["age"] > 85]).fit())
    assert len(pooled) > len(rows)


@pytest.mark.parametrize(("y", "x", "error"), [
    ("sex", ["age"], "categorical"),
    ("sbp", ["sbp"], "outcome"),
    ("sbp", [], "at least one predictor"),
    ("sbp", ["age", "age"], "twice"),
    ("sbp", ["nope"], "unknown variable"),
    ("nope", ["age"], "unknown variable"),
])
def test_linear_bad_input(fed, y, x, error) -> None:
    with pytest.raises(QueryError, match=error):
        linear_regression(fed, y, x)


def test_linear_rejects_noise(fed) -> None:
    with pytest.raises(QueryError, match="exact"):
        linear_regression(fed, "sbp", ["age"], privacy={"mode": "dp", "epsilon": 1})
    result = linear_regression(fed, "sbp", ["age"])
    with pytest.raises(QueryError, match="alpha"):
        result.conf_int(alpha=1.5)


# --- logistic regression -----------------------------------------------------------------------


def check_logit(ours, ref) -> None:
    assert ours.converged
    for name in ("params", "bse", "tvalues"):
        close(getattr(ours, name), getattr(ref, name), LOGIT_RTOL)
    close(ours.pvalues, ref.pvalues, 1e-6)
    close(ours.conf_int(), ref.conf_int(), LOGIT_RTOL)
    close(ours.cov_params(), ref.cov_params(), LOGIT_RTOL)
    for name in ("llf", "aic", "bic", "prsquared", "llnull", "llr"):
        close(getattr(ours, name), getattr(ref, name), LOGIT_RTOL)
    close(ours.llr_pvalue, ref.llr_pvalue, 1e-5)
    assert ours.nobs == ref.nobs
    assert ours.df_model == ref.df_model and ours.df_resid == ref.df_resid
    assert 1 <= ours.n_iterations <= 12
    assert ours.privacy == {"mode": "exact"}


def test_logistic_matches_statsmodels(fed, pooled) -> None:
    ours = logistic_regression(fed, "stroke", ["age", "bmi", "sex", "site"], "yes")
    ref = smf.logit("stroke01 ~ age + bmi + sex + site", pooled).fit(disp=0, tol=1e-12)
    check_logit(ours, ref)
    assert ours.positive_class == "yes" and ours.dependent_var == "stroke"
    # llnull in closed form from the counts, to rounding
    y = pooled.dropna(subset=["stroke01", "age", "bmi", "sex", "site"])["stroke01"]
    n1, n = y.sum(), len(y)
    assert ours.llnull == pytest.approx(n1 * math.log(n1 / n) + (n - n1) * math.log(1 - n1 / n),
                                        rel=1e-13)


def test_logistic_other_positive_class(fed, pooled) -> None:
    ours = logistic_regression(fed, "stroke", ["age", "sex"], "no")
    rows = pooled.assign(no=1.0 - pooled["stroke01"])
    check_logit(ours, smf.logit("no ~ age + sex", rows).fit(disp=0, tol=1e-12))


def test_logistic_one_level_against_the_rest(fed, pooled) -> None:
    """A categorical outcome with more levels: the positive class against all the others."""
    ours = logistic_regression(fed, "site", ["age", "bmi", "sex"], "west")
    rows = pooled[pooled["site"].notna()].assign(west=lambda f: (f["site"] == "west") * 1.0)
    check_logit(ours, smf.logit("west ~ age + bmi + sex", rows).fit(disp=0, tol=1e-12))


def test_logistic_numeric_outcome_filters_datasets(fed, pooled) -> None:
    chosen = ["hosp_a_1", "hosp_a_2", "hosp_b_2", "hosp_c_1"]
    ours = logistic_regression(fed, "event", ["age", "bmi", "site"], datasets=chosen,
                               filters="bmi > 20")
    rows = pooled[pooled["dataset"].isin(chosen) & (pooled["bmi"] > 20)]
    check_logit(ours, smf.logit("event ~ age + bmi + site", rows).fit(disp=0, tol=1e-12))
    same = logistic_regression(fed, "event", ["age", "bmi", "site"], 1, datasets=chosen,
                               filters="bmi > 20")
    close(same.params, ours.params, 0)


def test_logistic_absent_levels_follow_patsy(fed, pooled) -> None:
    ours = logistic_regression(fed, "stroke", ["age", "site"], "yes", filters="site != 'north'")
    assert list(ours.params.index) == ["Intercept", "age", "site[T.west]"]
    rows = pooled[pooled["site"].isin(["south", "west"])]
    check_logit(ours, smf.logit("stroke01 ~ age + site", rows).fit(disp=0, tol=1e-12))


def test_newton_halves_a_step_that_lowers_the_likelihood() -> None:
    """The safeguard plain Newton lacks: a worse point sends the iteration back half way."""
    one = [[Fraction(1)]]
    newton = Newton(1, ["Intercept"], 1e-10)
    newton.observe(Evaluation(20, 10, Fraction(-10), [Fraction(4)], one))
    assert newton.beta[0] == 4.0
    newton.observe(Evaluation(20, 10, Fraction(-30), [Fraction(-9)], one))
    assert newton.beta[0] == 2.0 and not newton.converged and newton.rounds == 2


def test_logistic_max_iter_reports_not_converged(fed) -> None:
    result = logistic_regression(fed, "stroke", ["age"], "yes", max_iter=2)
    assert not result.converged and result.n_iterations == 2


def separation_frames(kind: str) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(9)
    frames = {}
    for name in ("a", "b", "c"):
        n = 200
        x = rng.normal(0, 1, n)
        group = rng.choice(["g1", "g2", "g3"], n)
        if kind == "complete":
            y = (x > 0.2).astype(np.int64)
        else:  # quasi-complete: every row of g3 is a case
            y = np.where(group == "g3", 1, (rng.random(n) < 1 / (1 + np.exp(-x)))).astype(np.int64)
        frames[name] = pd.DataFrame({"x": x, "group": group, "y": y,
                                     "w": rng.normal(0, 1, n)})
    return frames


@pytest.mark.parametrize("kind", ["complete", "quasi"])
def test_logistic_separation_raises(kind) -> None:
    fed = SimulatedFederation(separation_frames(kind), seed=5)
    with pytest.raises(DegenerateInput, match="separation"):
        logistic_regression(fed, "y", ["x", "group", "w"])


@pytest.mark.parametrize(("y", "x", "positive", "filters", "message"), [
    ("stroke", ["age"], "yes", "age > 1000", "no complete rows"),
    ("stroke", ["age", "age2"], "yes", None, "age2 is constant or a linear combination"),
    ("stroke", ["age", "const"], "yes", None, "const is constant"),
    ("stroke", ["age"], "yes", "stroke == 'no'", "every outcome is negative"),
    ("event", ["age"], None, "event == 1", "every outcome is positive"),
])
def test_logistic_degenerate(y, x, positive, filters, message) -> None:
    frames = make_data(5)
    for frame in frames.values():
        frame["age2"] = 2 * frame["age"] + 1
        frame["const"] = 7.0
    fed = SimulatedFederation(frames, seed=4)
    with pytest.raises(DegenerateInput, match=message):
        logistic_regression(fed, y, x, positive, filters=filters)


def test_logistic_zero_residual_df() -> None:
    frames = {f"n{i}": pd.DataFrame({"x": [float(i), i + 1.5], "y": [0, 1]}) for i in range(2)}
    fed = SimulatedFederation(frames, policy=Policy(min_row_count=1, small_cell_threshold=1),
                              seed=1, max_colluding_nodes=0)
    with pytest.raises(DegenerateInput, match="no residual degrees of freedom"):
        logistic_regression(fed, "y", ["x"], filters="x < 1.2")


@pytest.mark.parametrize(("y", "positive", "kwargs", "error"), [
    ("stroke", None, {}, "positive_class"),
    ("stroke", "maybe", {}, "not a level"),
    ("event", "yes", {}, "numeric"),
    ("stroke", "yes", {"max_iter": 0}, "max_iter"),
    ("stroke", "yes", {"tol": 0.0}, "tol"),
])
def test_logistic_bad_input(fed, y, positive, kwargs, error) -> None:
    with pytest.raises(QueryError, match=error):
        logistic_regression(fed, y, ["age"], positive, **kwargs)


# --- cross-validation --------------------------------------------------------------------------


def pooled_folds(data: dict[str, pd.DataFrame], k: int, seed: int, needed: list[str]
                 ) -> pd.DataFrame:
    """Every node's complete cases with the fold its node gives them (fold_numbers runs on
    the node's own row positions)."""
    parts = []
    for frame in data.values():
        frame = frame.reset_index(drop=True)
        frame = frame.assign(fold=fold_numbers(frame, k, seed))
        parts.append(frame.dropna(subset=needed))
    return pd.concat(parts, ignore_index=True)


def design(rows: pd.DataFrame) -> np.ndarray:
    return np.column_stack([np.ones(len(rows)), rows["age"], rows["bmi"],
                            (rows["sex"] == "M").astype(float)])


def test_linear_cv_matches_pooled_folds(fed, data) -> None:
    k, seed = 4, 17
    ours = linear_regression_cv(fed, "sbp", ["age", "bmi", "sex"], n_splits=k, fold_seed=seed)
    rows = pooled_folds(data, k, seed, ["sbp", "age", "bmi", "sex"])
    assert ours.indep_vars == ["Intercept", "age", "bmi", "sex[T.M]"]
    for f in range(k):
        train, test = rows[rows["fold"] != f], rows[rows["fold"] == f]
        beta = smf.ols("sbp ~ age + bmi + sex", train).fit().params
        beta = beta[["Intercept", "age", "bmi", "sex[T.M]"]].to_numpy()
        residual = test["sbp"].to_numpy() - design(test) @ beta
        sse = float(residual @ residual)
        tss = float(((test["sbp"] - test["sbp"].mean()) ** 2).sum())
        row = ours.folds.iloc[f]
        assert (row["n_obs"], row["n_test"]) == (len(train), len(test))
        np.testing.assert_allclose(ours.params.iloc[:, f], beta, rtol=RTOL)
        assert row["mse"] == pytest.approx(sse / len(test), rel=RTOL)
        assert row["rmse"] == pytest.approx(math.sqrt(sse / len(test)), rel=RTOL)
        assert row["r_squared"] == pytest.approx(1 - sse / tss, rel=RTOL)
        assert row["mean_abs_error"] == pytest.approx(np.abs(residual).mean(), rel=RTOL)
    assert ours.summary.loc["average", "rmse"] == pytest.approx(ours.folds["rmse"].mean())
    assert ours.summary.loc["stdev", "r_squared"] == pytest.approx(
        ours.folds["r_squared"].std(ddof=1))
    shaped = ours.to_exareme2()
    assert shaped["mean_sq_error"] == [ours.summary.loc["average", "rmse"],
                                       ours.summary.loc["stdev", "rmse"]]
    assert shaped["n_obs"] == list(ours.folds["n_obs"])


def exareme2_auc(y: np.ndarray, proba: np.ndarray, points: int) -> tuple[float, np.ndarray]:
    """Exareme2's ROC curve (confusion counts at linspace(1, 0, points)) and trapezoid AUC,
    computed on the pooled rows (with p >= t, as ours)."""
    thresholds = np.linspace(1.0, 0.0, points)
    tpr, fpr = [], []
    for t in thresholds:
        called = proba >= t if 0 < t < 1 else (proba > t)
        tpr.append((called & (y == 1)).sum() / (y == 1).sum())
        fpr.append((called & (y == 0)).sum() / (y == 0).sum())
    return float(np.trapezoid(tpr, fpr)), np.array(fpr)


def test_logistic_cv_matches_pooled_folds(data) -> None:
    # the ROC curve's extreme thresholds leave confusion cells of a few rows, which the
    # default policy withholds (test_small_roc_cells_are_withheld): arithmetic first
    fed = SimulatedFederation(data, seed=11, policy=Policy(small_cell_threshold=1))
    k, seed, points = 3, 5, 25
    ours = logistic_regression_cv(fed, "stroke", ["age", "bmi", "sex"], "yes", n_splits=k,
                                  fold_seed=seed, roc_thresholds=points)
    rows = pooled_folds(data, k, seed, ["stroke", "age", "bmi", "sex"])
    rows["y"] = (rows["stroke"] == "yes").astype(float)
    total = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for f in range(k):
        train, test = rows[rows["fold"] != f], rows[rows["fold"] == f]
        fit = smf.logit("y ~ age + bmi + sex", train).fit(disp=0, tol=1e-12)
        beta = fit.params[["Intercept", "age", "bmi", "sex[T.M]"]].to_numpy()
        np.testing.assert_allclose(ours.params.iloc[:, f], beta, rtol=LOGIT_RTOL)
        proba = 1 / (1 + np.exp(-(design(test) @ beta)))
        y = test["y"].to_numpy()
        called = proba >= 0.5
        counts = {"tp": int((called & (y == 1)).sum()), "fp": int((called & (y == 0)).sum()),
                  "tn": int((~called & (y == 0)).sum()), "fn": int((~called & (y == 1)).sum())}
        for key in total:
            total[key] += counts[key]
        row = ours.folds.iloc[f]
        assert (row["n_obs"], row["n_test"]) == (len(train), len(test))
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        assert row["accuracy"] == pytest.approx((tp + counts["tn"]) / len(test), rel=1e-15)
        assert row["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert row["recall"] == pytest.approx(tp / (tp + fn))
        auc, fpr = exareme2_auc(y, proba, points)
        assert row["auc"] == pytest.approx(auc, rel=1e-12)
        np.testing.assert_allclose(ours.roc_curves[f"fold_{f + 1}"]["fpr"], fpr, rtol=1e-12)
    assert ours.confusion_matrix == total
    assert ours.converged
    shaped = ours.to_exareme2()
    assert shaped["summary"]["row_names"] == ["fold_1", "fold_2", "fold_3", "average", "stdev"]
    assert shaped["summary"]["n_obs"][-2:] == [None, None]
    assert len(shaped["roc_curves"]) == k and len(shaped["roc_curves"][0]["tpr"]) == points
    assert set(ours.summary.columns) == {"accuracy", "precision", "recall", "fscore", "auc"}


def test_small_roc_cells_are_withheld(fed, data) -> None:
    """Under the default policy a confusion count below 10 at a node reads 0 there: the
    fits are the same (their sums cover many rows), but the ROC curve's extreme thresholds,
    where a few rows are called positive, lose those rows."""
    relaxed = SimulatedFederation(data, seed=11, policy=Policy(small_cell_threshold=1))
    args = ("stroke", ["age", "bmi", "sex"], "yes")
    ours = logistic_regression_cv(fed, *args, n_splits=3, fold_seed=5, roc_thresholds=25)
    every = logistic_regression_cv(relaxed, *args, n_splits=3, fold_seed=5, roc_thresholds=25)
    np.testing.assert_allclose(ours.params.to_numpy(), every.params.to_numpy(), rtol=1e-12)
    curves = [(ours.roc_curves[f]["tpr"].to_numpy(), every.roc_curves[f]["tpr"].to_numpy())
              for f in ours.roc_curves]
    assert any(not np.array_equal(a, b) for a, b in curves)


def test_logistic_cv_without_roc(fed) -> None:
    ours = logistic_regression_cv(fed, "event", ["age"], n_splits=2, roc_thresholds=0)
    assert "auc" not in ours.folds.columns and ours.roc_curves == {}
    f1 = ours.folds["fscore"]
    p, r = ours.folds["precision"], ours.folds["recall"]
    np.testing.assert_allclose(f1, np.where(p + r > 0, 2 * p * r / (p + r), 0.0))


def test_cv_bad_input_and_degenerate(fed) -> None:
    with pytest.raises(QueryError, match="n_splits"):
        linear_regression_cv(fed, "sbp", ["age"], n_splits=1)
    with pytest.raises(QueryError, match="n_splits"):
        logistic_regression_cv(fed, "stroke", ["age"], "yes", n_splits=21)
    with pytest.raises(QueryError, match="roc_thresholds"):
        logistic_regression_cv(fed, "stroke", ["age"], "yes", roc_thresholds=1)
    with pytest.raises(DegenerateInput, match="no complete rows"):
        linear_regression_cv(fed, "sbp", ["age"], filters="age > 1000")
    with pytest.raises(DegenerateInput, match="no complete rows"):
        logistic_regression_cv(fed, "stroke", ["age"], "yes", filters="age > 1000")


def test_cv_degenerate_training_fold() -> None:
    """Too few rows for the folds: a training set without residual degrees of freedom."""
    frames = {f"n{i}": pd.DataFrame({"x": [0.0 + i, 1.0, 2.5 + i], "y": [1.0, 0.5 + i, 2.0],
                                     "c": [0, 1, i]}) for i in range(2)}
    fed = SimulatedFederation(frames, policy=Policy(min_row_count=1, small_cell_threshold=1),
                              seed=1, max_colluding_nodes=0)
    with pytest.raises(DegenerateInput, match="fold"):
        linear_regression_cv(fed, "y", ["x"], n_splits=5)
    with pytest.raises(DegenerateInput, match="fold"):
        logistic_regression_cv(fed, "c", ["x"], n_splits=5, roc_thresholds=0)


def test_cv_separated_fold_raises() -> None:
    fed = SimulatedFederation(separation_frames("complete"), seed=5)
    with pytest.raises(DegenerateInput, match="separation.*fold"):
        logistic_regression_cv(fed, "y", ["x"], n_splits=3, roc_thresholds=0)


def test_p_values_use_t_and_normal(fed) -> None:
    """Spot check the distributions: t on df_resid for OLS, normal for logistic."""
    lin = linear_regression(fed, "sbp", ["z"])
    t = lin.tvalues["z"]
    assert lin.pvalues["z"] == pytest.approx(2 * stats.t.sf(abs(t), lin.df_resid), rel=1e-12)
    logit = logistic_regression(fed, "event", ["z"])
    z = logit.tvalues["z"]
    assert logit.pvalues["z"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-12)
