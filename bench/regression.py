"""Federated linear regression (10 covariates) and logistic regression (5 covariates) on
3 nodes x 1,000,000 rows through a real local federation (node processes, TLS websockets,
secure sum), next to statsmodels OLS / Logit on the pooled 3,000,000 rows, measured in the
same run with interleaved repeats (median).

statsmodels is timed twice: the fit alone (``OLS(y, X).fit()``, ``Logit(y, X).fit()``), and
the fit plus every output our result carries (standard errors, t/z and p-values, confidence
intervals, fit statistics; for Logit that includes ``llnull``, which statsmodels gets by
fitting the intercept-only model and we in closed form). It is given ready-made numpy
arrays: no pandas or formula parsing in its time. A ``count`` over the same rows is timed
too: one round of a trivial statistic, the fixed cost of a round at this size.

A second part times, in this process, what one node computes per round on its 1,000,000
rows (``node.statistics.local_vector``: row selection, design matrix, sums, encoding), to
show where a federated round's time goes.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedtally.local import local_federation
from fedtally.methods.common import predictor_terms
from fedtally.methods.linear_regression import linear_regression
from fedtally.methods.logistic_regression import logistic_regression

ROWS = 1_000_000
NODES = ("hosp_a", "hosp_b", "hosp_c")
LINEAR_X = [f"x{i}" for i in range(1, 11)]
LOGISTIC_X = LINEAR_X[:5]
REPEATS = 5


def node_frame(seed: int) -> pd.DataFrame:
    """One node's rows: 10 covariates on different scales, a continuous and a 0/1 outcome."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 20.0, len(LINEAR_X))
    means = np.linspace(-5.0, 60.0, len(LINEAR_X)) + seed
    x = rng.normal(means, scales, size=(ROWS, len(LINEAR_X)))
    beta = np.linspace(-0.4, 0.4, len(LINEAR_X)) / scales
    y = 2.0 + (x - means) @ beta + rng.normal(0.0, 1.0, ROWS)
    eta = -1.0 + (x[:, :5] - means[:5]) @ (np.array([0.8, -0.5, 0.3, 0.6, -0.2]) / scales[:5])
    event = (rng.random(ROWS) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    frame = pd.DataFrame(x, columns=LINEAR_X)
    frame["y"] = y
    frame["event"] = event
    return frame


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def _ols_fit(y: np.ndarray, x: np.ndarray) -> Any:
    import statsmodels.api as sm

    return sm.OLS(y, x).fit()


def _ols_outputs(y: np.ndarray, x: np.ndarray) -> Any:
    """The fit and every output ``linear_regression`` gives."""
    fit = _ols_fit(y, x)
    _ = (fit.params, fit.bse, fit.tvalues, fit.pvalues, fit.conf_int(), fit.rsquared,
         fit.rsquared_adj, fit.fvalue, fit.f_pvalue, fit.llf, fit.aic, fit.bic)
    return fit


def _logit_fit(y: np.ndarray, x: np.ndarray) -> Any:
    import statsmodels.api as sm

    return sm.Logit(y, x).fit(disp=0)


def _logit_outputs(y: np.ndarray, x: np.ndarray) -> Any:
    """The fit and every output ``logistic_regression`` gives (llnull refits the
    intercept-only model in statsmodels)."""
    fit = _logit_fit(y, x)
    _ = (fit.params, fit.bse, fit.tvalues, fit.pvalues, fit.conf_int(), fit.llf, fit.llnull,
         fit.aic, fit.bic, fit.prsquared)
    return fit


def _interleaved(contenders: dict[str, Callable[[], Any]]
                 ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Warm each up, then run them in turn REPEATS times (machine noise hits all alike)."""
    results = {name: fn() for name, fn in contenders.items()}
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(REPEATS):
        for name, fn in contenders.items():
            gc.collect()
            start = time.perf_counter()
            results[name] = fn()
            samples[name].append(time.perf_counter() - start)
    return samples, results


def _lines(title: str, samples: dict[str, list[float]], notes: dict[str, str]) -> list[str]:
    lines = [f"  {title}"]
    for name, values in samples.items():
        lines.append(f"    {name:28s} median {_median(values):6.2f} s  "
                     f"[{min(values):.2f}-{max(values):.2f}]  {notes.get(name, '')}".rstrip())
    ours = _median(samples["federated"])
    for name in samples:
        if name.startswith("statsmodels"):
            lines.append(f"    ratio to {name:27s} {ours / _median(samples[name]):5.2f}x  "
                         "(aim <= 1.5x)")
    return lines


def _node_side(frame: pd.DataFrame, model: Any, rounds: int) -> list[str]:
    """One node's local work per round, in this process (median of 3)."""
    from node.statistics import local_vector
    from node.validation import coerce
    from stats.datamodel import PlanModel
    from stats.planner import layout
    from stats.query import QuerySpec

    rows = coerce(frame.assign(dataset=NODES[0]), model).reset_index(drop=True)
    view = PlanModel(model)
    specs = {
        "crossprod (linear, 12 terms)": QuerySpec(
            "linear_regression", model.name, (NODES[0],), (), None, None, kind="crossprod",
            parameters={"terms": predictor_terms(LINEAR_X, view) + [{"var": "y"}]}),
        "logistic (one Newton round, 6 terms)": QuerySpec(
            "logistic_regression", model.name, (NODES[0],), (), None, None, kind="logistic",
            parameters={"terms": predictor_terms(LOGISTIC_X, view),
                        "outcome": {"var": "event"}, "beta": [0.1] * 6}),
    }
    lines = []
    for name, spec in specs.items():
        plan = layout(spec, view, 1 << 24)
        samples = []
        for _ in range(3):
            start = time.perf_counter()
            local_vector(spec, plan, rows, model, min_row_count=10, small_cell_threshold=10)
            samples.append(time.perf_counter() - start)
        lines.append(f"    {name:38s} {_median(samples) * 1000:7.1f} ms per node per round")
    lines.append(f"    (logistic regression used {rounds} rounds; 3 node processes share "
                 "the machine's cores)")
    return lines


def _gap(ours: pd.Series, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours.to_numpy() / theirs - 1)))


def run() -> list[str]:
    lines = [f"regression, 3 nodes x {ROWS:,} rows (Parquet), {REPEATS} interleaved repeats "
             "(median; min-max in brackets)"]
    frames = {name: node_frame(10 + i) for i, name in enumerate(NODES)}
    pooled = pd.concat(frames.values(), ignore_index=True)
    ones = np.ones((len(pooled), 1))
    x_lin = np.hstack([ones, pooled[LINEAR_X].to_numpy()])
    x_log = np.hstack([ones, pooled[LOGISTIC_X].to_numpy()])
    y_lin = pooled["y"].to_numpy()
    y_log = pooled["event"].to_numpy(dtype=np.float64)
    del pooled
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, frame in frames.items():
            paths[name] = Path(tmp) / f"{name}.parquet"
            frame.to_parquet(paths[name], index=False)
        with local_federation(paths, workdir=Path(tmp) / "fed", timeout_s=600.0) as fed:
            samples, results = _interleaved({
                "federated": lambda: linear_regression(fed, "y", LINEAR_X),
                "statsmodels fit": lambda: _ols_fit(y_lin, x_lin),
                "statsmodels fit + outputs": lambda: _ols_outputs(y_lin, x_lin),
                "count (one trivial round)": fed.count})
            gap = _gap(results["federated"].params, results["statsmodels fit"].params)
            lines += _lines("linear_regression (10 covariates)", samples,
                            {"federated": f"1 round; params max rel. diff {gap:.1e}"})
            samples, results = _interleaved({
                "federated": lambda: logistic_regression(fed, "event", LOGISTIC_X),
                "statsmodels fit": lambda: _logit_fit(y_log, x_log),
                "statsmodels fit + outputs": lambda: _logit_outputs(y_log, x_log)})
            ours = results["federated"]
            gap = _gap(ours.params, results["statsmodels fit"].params)
            lines += _lines("logistic_regression (5 covariates)", samples,
                            {"federated": f"{ours.n_iterations} rounds; params max rel. diff "
                                          f"{gap:.1e}",
                             "statsmodels fit": "(newton, "
                             f"{results['statsmodels fit'].mle_retvals['iterations']} "
                             "iterations)"})
            model = fed.model()
            rounds = ours.n_iterations
    lines.append("  where a round's time goes: one node's local statistic, in-process")
    try:
        lines += _node_side(frames[NODES[0]], model, rounds)
    except Exception as exc:  # noqa: BLE001 - keep the measurements above if this part breaks
        lines.append(f"    (unavailable: {type(exc).__name__}: {exc})")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
