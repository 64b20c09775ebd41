"""Results people read: ``.summary()`` text in the style of statsmodels, a concise ``repr``
and ``.plot()`` (matplotlib, imported only when a plot is asked for).

Every result type of the catalog gets ``summary()`` (a title, fit statistics in two columns,
its main table, then a federation line and a privacy line) and a one-line ``repr``;
histograms, Kaplan-Meier tables and PCA results also get ``plot()``. :func:`fedtally.catalog.attach_display` attaches
them to the result classes once (the classes stay plain dataclasses and DataFrames).
Everything shown comes from the result object: nothing is asked again of the federation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedtally.coverage import cells_read_zero
from protocol.errors import ConfigurationError

WIDTH = 78
Fields = list[tuple[str, Any]]


# --- text -------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def _columns(left: Fields, right: Fields) -> list[str]:
    half = WIDTH // 2
    lines = []
    for i in range(max(len(left), len(right))):
        cells = []
        for side in (left, right):
            if i < len(side):
                label, value = side[i]
                text = _fmt(value)
                # A long value (many predictors) overflows its column rather than failing.
                width = max(half - len(text) - 1, len(label) + 2)
                cells.append(f"{label + ':':<{width}}{text} ")
            else:
                cells.append(" " * half)
        lines.append("".join(cells).rstrip())
    return lines


def federation_line(federation: dict[str, Any]) -> str:
    """One line: whom the answer covers."""
    if not federation:
        return "Federation: not recorded"
    text = (f"Federation: {federation.get('nodes_answered', '?')} of "
            f"{federation.get('nodes_asked', '?')} nodes answered, "
            f"{federation.get('nodes_contributing', '?')} contributed")
    covered = federation.get("datasets_covered")
    if covered is not None:
        text += f"; datasets covered: {', '.join(covered) or 'none'}"
    missing = federation.get("datasets_not_covered") or {}
    if missing:
        text += f"; NOT covered: {', '.join(missing)}"
    cells = cells_read_zero(federation)  # as the warning counts them
    if cells > 0:
        text += f"; {cells} node-level cell(s) read 0 (small or empty)"
    return text


def privacy_line(privacy: dict[str, Any]) -> str:
    """One line: exact, or what the DP answer spent and how noisy a count is."""
    if not privacy or privacy.get("mode") != "dp":
        return "Privacy: exact (secure aggregation, no noise)"
    text = f"Privacy: differential privacy, rho={_fmt(privacy.get('rho'))}"
    if "epsilon" in privacy:
        text += f" (epsilon={_fmt(privacy['epsilon'])}, delta={_fmt(privacy.get('delta'))})"
    if "count_noise_std" in privacy:
        text += f"; noise std of a count {_fmt(privacy['count_noise_std'])}"
    return text


def _wrap(line: str) -> list[str]:
    words, out, current = line.split(" "), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > WIDTH:
            out.append(current)
            current = "    " + word
        else:
            current = f"{current} {word}" if current else word
    return [*out, current]


def render(title: str, left: Fields, right: Fields, tables: Sequence[pd.DataFrame],
           federation: dict[str, Any], privacy: dict[str, Any],
           notes: Sequence[str] = ()) -> str:
    """The statsmodels-style text block every ``summary()`` returns."""
    rule, thin = "=" * WIDTH, "-" * WIDTH
    lines = [title.center(WIDTH).rstrip(), rule, *_columns(left, right)]
    for table in tables:
        lines.append(rule)
        with pd.option_context("display.width", WIDTH, "display.max_columns", 12,
                               "display.max_rows", 40, "display.float_format", _fmt):
            lines.extend(table.to_string().splitlines())
    lines.append(thin)
    for line in (federation_line(federation), privacy_line(privacy), *notes):
        lines.extend(_wrap(line))
    lines.append(rule)
    return "\n".join(lines)


class Summary(str):
    """Summary text; shows as text in a notebook or at the prompt (not as a quoted str)."""

    def __repr__(self) -> str:
        return str(self)


def coef_table(params: pd.Series, bse: pd.Series, stat: pd.Series, pvalues: pd.Series,
               ci: pd.DataFrame, stat_name: str, p_name: str, alpha: float = 0.05
               ) -> pd.DataFrame:
    low, high = f"[{alpha / 2:.3f}", f"{1 - alpha / 2:.3f}]"
    return pd.DataFrame({"coef": params, "std err": bse, stat_name: stat, p_name: pvalues,
                         low: ci[0], high: ci[1]})


# --- per result -------------------------------------------------------------------------


def _ols(r: Any) -> Summary:
    left = [("Dep. Variable", r.dependent_var), ("No. Observations", r.nobs),
            ("Df Residuals", r.df_resid), ("Df Model", r.df_model),
            ("Log-Likelihood", r.llf)]
    right = [("R-squared", r.rsquared), ("Adj. R-squared", r.rsquared_adj),
             ("F-statistic", r.fvalue), ("Prob (F-statistic)", r.f_pvalue), ("AIC", r.aic),
             ("BIC", r.bic)]
    table = coef_table(r.params, r.bse, r.tvalues, r.pvalues, r.conf_int(), "t", "P>|t|")
    if r.noise_std is not None:
        table["noise std"] = r.noise_std
    return Summary(render("OLS Regression Results (federated)", left, right, [table],
                          r.federation, r.privacy))


def _logit(r: Any) -> Summary:
    left = [("Dep. Variable", r.dependent_var), ("Positive class", r.positive_class),
            ("No. Observations", r.nobs), ("Df Residuals", r.df_resid),
            ("Df Model", r.df_model), ("Converged", r.converged),
            ("Newton rounds", r.n_iterations)]
    right = [("Pseudo R-squ.", r.prsquared), ("Log-Likelihood", r.llf), ("LL-Null", r.llnull),
             ("LLR", r.llr), ("LLR p-value", r.llr_pvalue), ("AIC", r.aic), ("BIC", r.bic)]
    table = coef_table(r.params, r.bse, r.tvalues, r.pvalues, r.conf_int(), "z", "P>|z|")
    return Summary(render("Logit Regression Results (federated)", left, right, [table],
                          r.federation, r.privacy))


def _ttest(r: Any) -> Summary:
    left = [("Test", r.test), ("Alternative", r.alternative), ("No. Observations", r.nobs),
            ("Estimate", r.estimate), ("Mean difference", r.mean_diff), ("Std. error", r.se)]
    right = [("t statistic", r.statistic), ("Df", r.df), ("P-value", r.pvalue),
             (f"CI {1 - r.alpha:.0%}", r.ci), ("Cohen's d", r.cohens_d)]
    if r.noise_std:
        right.append(("Noise std", r.noise_std))
    return Summary(render("t-test (federated)", left, right, [r.samples], r.federation,
                          r.privacy))


def _chi2(r: Any) -> Summary:
    left = [("Chi-square", r.statistic), ("Dof", r.dof), ("P-value", r.pvalue)]
    right = [("No. Observations", r.nobs), ("Yates correction", r.correction)]
    return Summary(render("Chi-square test of independence (federated)", left, right,
                          [r.observed], r.federation, r.privacy,
                          [r.note] if getattr(r, "note", "") else []))


def _anova1(r: Any) -> Summary:
    left = [("F statistic", r.statistic), ("P-value", r.pvalue)]
    right = [("No. Observations", r.nobs), ("Groups", len(r.groups))]
    return Summary(render("One-way ANOVA (federated)", left, right, [r.table, r.groups],
                          r.federation, r.privacy))


def _anova2(r: Any) -> Summary:
    left = [("Type of sums of squares", r.sstype), ("No. Observations", r.nobs)]
    right = [("Cells", r.cells), ("Aliased", ", ".join(r.aliased) or "none")]
    return Summary(render("Two-way ANOVA (federated)", left, right, [r.table], r.federation,
                          r.privacy))


def _pearson(r: Any) -> Summary:
    left = [("No. Observations", r.nobs), ("Alternative", r.alternative)]
    right = [("Alpha", r.alpha)]
    return Summary(render("Pearson correlation (federated)", left, right,
                          [r.r.rename_axis("r"), r.pvalues.rename_axis("p-value")],
                          r.federation, r.privacy))


def _pca(r: Any) -> Summary:
    left = [("No. Observations", r.nobs), ("Standardized", r.standardize)]
    right = [("Components", len(r.eigenvalues))]
    table = pd.DataFrame({"eigenvalue": r.eigenvalues,
                          "explained ratio": r.explained_variance_ratio,
                          "cumulative": r.explained_variance_ratio.cumsum()})
    return Summary(render("Principal components (federated)", left, right,
                          [table, r.eigenvectors.rename_axis("loadings")], r.federation,
                          r.privacy))


def _kmeans(r: Any) -> Summary:
    left = [("Clusters", len(r.sizes)), ("No. Observations", r.nobs), ("Inertia", r.inertia)]
    right = [("Iterations", r.n_iter), ("Converged", r.converged), ("Reseeded", r.reseeded)]
    table = r.centers.assign(size=r.sizes)
    return Summary(render("k-means (federated)", left, right, [table], r.federation,
                          r.privacy))


def _naive_bayes(r: Any) -> Summary:
    left = [("Classes", len(r.classes_)), ("No. Observations", r.nobs)]
    right = [("Features", ", ".join(r.features))]
    table = pd.DataFrame({"count": r.class_count_, "prior": r.class_prior_})
    tables = [table] + ([r.theta_.rename_axis("mean")] if hasattr(r, "theta_") else [])
    return Summary(render(f"{type(r).__name__} (federated)", left, right, tables,
                          r.federation, r.privacy))


def _cv(r: Any) -> Summary:
    left = [("Dep. Variable", r.dependent_var), ("Folds", len(r.folds))]
    right = [("Predictors", ", ".join(r.indep_vars))]
    return Summary(render(f"{type(r).__name__.removesuffix('Result')} (federated)", left,
                          right, [pd.DataFrame(r.summary)], r.federation, r.privacy))


def _logrank(r: Any) -> Summary:
    left = [("Chi-square", r.statistic), ("Dof", r.dof), ("P-value", r.pvalue)]
    right = [("Groups", len(r.nobs))]
    table = pd.DataFrame({"nobs": r.nobs, "observed": r.observed, "expected": r.expected})
    return Summary(render("Log-rank test (federated)", left, right, [table], r.federation,
                          r.privacy))


def frame_summary(frame: pd.DataFrame, title: str, left: Fields = ()) -> Summary:  # type: ignore[assignment]
    attrs = frame.attrs
    return Summary(render(title, list(left), [("Rows", len(frame))], [pd.DataFrame(frame)],
                          attrs.get("federation", {}), attrs.get("privacy", {})))


def count_summary(count: Any) -> Summary:
    return Summary(render("Count (federated)", [("Count", int(count))], [],
                          [], count.federation, count.privacy))


def noisy_summary(value: Any) -> Summary:
    low, high = value.ci()
    left = [("Value", value.value), ("Noise std", value.noise_std)]
    right = [("95% interval", (low, high))]
    if value.raw is not None:
        right.append(("Released (raw)", value.raw))
    return Summary(render("Differentially private value (federated)", left, right, [],
                          value.federation, value.privacy))


# --- concise repr -----------------------------------------------------------------------

#: the scalar fields each result's repr shows, in order
REPR_FIELDS: dict[str, tuple[str, ...]] = {
    "LinearRegressionResult": ("dependent_var", "nobs", "rsquared", "fvalue", "f_pvalue"),
    "LogisticRegressionResult": ("dependent_var", "nobs", "prsquared", "llf", "converged"),
    "TTestResult": ("test", "statistic", "pvalue", "df", "nobs"),
    "ChiSquareResult": ("statistic", "pvalue", "dof", "nobs"),
    "AnovaOnewayResult": ("statistic", "pvalue", "nobs"),
    "AnovaTwowayResult": ("nobs", "cells", "sstype"),
    "PearsonResult": ("nobs", "alternative"),
    "PCAResult": ("nobs", "standardize"),
    "KMeansResult": ("nobs", "inertia", "n_iter", "converged"),
    "GaussianNaiveBayes": ("classes_", "features", "nobs"),
    "CategoricalNaiveBayes": ("classes_", "features", "nobs"),
    "LinearRegressionCVResult": ("dependent_var", "indep_vars"),
    "LogisticRegressionCVResult": ("dependent_var", "positive_class", "converged"),
    "LogrankResult": ("statistic", "pvalue", "dof"),
}


def concise_repr(result: Any) -> str:
    name = type(result).__name__
    shown = ", ".join(f"{f}={_fmt(getattr(result, f))}" for f in REPR_FIELDS.get(name, ()))
    federation = getattr(result, "federation", {}) or {}
    mode = (getattr(result, "privacy", {}) or {}).get("mode", "exact")
    nodes = (f"{federation.get('nodes_contributing', '?')}/{federation.get('nodes_asked', '?')}"
             " nodes")
    return f"<{name} {shown}; {nodes}; {mode}; .summary() for more>"


# --- plots ------------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib.pyplot, or a clear error naming the extra that installs it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigurationError("plots need matplotlib: pip install 'fedtally[plot]'") \
            from exc
    return plt


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    _, made = pyplot().subplots(figsize=(7, 4.5))
    return made


def _finish(ax: Any, path: str | Path | None) -> Any:
    ax.figure.tight_layout()
    if path is not None:
        ax.figure.savefig(path, dpi=100)
    return ax


def plot_histogram(frame: pd.DataFrame, ax: Any = None, path: str | Path | None = None,
                   **bar: Any) -> Any:
    """Bars of a histogram frame (one colour per ``by`` level); DP error bars of 1.96 noise
    std. Returns the matplotlib Axes; ``path`` saves the figure (PNG, SVG, PDF...)."""
    ax = _axes(ax)
    numeric = "bin_start" in frame.columns
    by = [c for c in frame.columns if c not in ("bin_start", "bin_end", "category", "count",
                                                "noise_std", "ci_low", "ci_high",
                                                "noisy_count")]
    blocks = list(frame.groupby(by[0], sort=False)) if by else [(None, frame)]
    width_share = 1.0 / len(blocks)
    for i, (level, block) in enumerate(blocks):
        err = 1.959963984540054 * block["noise_std"] if "noise_std" in block else None
        if numeric:
            widths = (block["bin_end"] - block["bin_start"]).to_numpy()
            left = block["bin_start"].to_numpy() + i * widths * width_share
            ax.bar(left, block["count"], width=widths * width_share, align="edge",
                   yerr=err, label=None if level is None else str(level), alpha=0.85,
                   edgecolor="white", **bar)
        else:
            x = np.arange(len(block)) + i * width_share - 0.5 + width_share / 2
            ax.bar(x, block["count"], width=width_share * 0.9, yerr=err,
                   label=None if level is None else str(level), **bar)
            ax.set_xticks(np.arange(len(block)), [str(c) for c in block["category"]])
    ax.set_ylabel("count")
    if by:
        ax.legend(title=by[0])
    privacy = frame.attrs.get("privacy", {})
    ax.set_title("histogram" + (" (DP, bars: 95% noise interval)"
                                if privacy.get("mode") == "dp" else ""))
    return _finish(ax, path)


def plot_kaplan_meier(table: pd.DataFrame, ax: Any = None, path: str | Path | None = None,
                      ci: bool = True) -> Any:
    """Step curves of survival (one per group), with the confidence band shaded."""
    ax = _axes(ax)
    blocks = list(table.groupby("group", sort=False)) if "group" in table else [(None, table)]
    for level, block in blocks:
        line = ax.step(block["time"], block["survival"], where="post",
                       label="all" if level is None else str(level))
        if ci:
            ax.fill_between(block["time"], block["ci_lower"], block["ci_upper"], step="post",
                            alpha=0.25, color=line[0].get_color())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time")
    ax.set_ylabel("survival")
    alpha = table.attrs.get("alpha", 0.05)
    ax.set_title(f"Kaplan-Meier ({1 - alpha:.0%} confidence band)")
    if len(blocks) > 1:
        ax.legend(title=table.attrs.get("by") or "group")
    return _finish(ax, path)


def plot_scree(result: Any, ax: Any = None, path: str | Path | None = None) -> Any:
    """Scree plot: eigenvalues as bars, cumulative explained ratio as a line (right axis)."""
    ax = _axes(ax)
    names = list(result.eigenvalues.index)
    ax.bar(names, result.eigenvalues.to_numpy(), color="tab:blue",
           yerr=None if result.noise_std is None else 1.96 * result.noise_std.to_numpy())
    ax.set_ylabel("eigenvalue")
    twin = ax.twinx()
    twin.plot(names, result.explained_variance_ratio.cumsum().to_numpy(), "o-",
              color="tab:orange")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("cumulative explained ratio")
    ax.set_title("PCA scree plot")
    return _finish(ax, path)


# --- attaching them ---------------------------------------------------------------------


def _summary_method(render_: Callable[[Any], Summary]) -> Callable[[Any], Summary]:
    def summary(self: Any) -> Summary:
        """The result as statsmodels-style text (fit statistics, table, federation and
        privacy lines)."""
        return render_(self)

    return summary


class _FrameWithSummary(pd.DataFrame):
    """A DataFrame field that is also callable: ``result.summary`` stays the table it was,
    ``result.summary()`` is the text (cross-validation results, whose table is named so)."""

    _metadata = ["_text"]

    @property
    def _constructor(self) -> Callable[..., pd.DataFrame]:
        return pd.DataFrame

    def __call__(self) -> Summary:
        return self._text


def with_cv_summary(result: Any) -> Any:
    """Make a cross-validation result's ``summary`` table callable for the text."""
    table = _FrameWithSummary(result.summary)
    table.attrs.update(result.summary.attrs)
    object.__setattr__(result, "summary", table)
    table._text = _cv(dataclasses.replace(result, summary=pd.DataFrame(result.summary)))
    return result


class ResultFrame(pd.DataFrame):
    """A result table (a pandas DataFrame) that also says whom it covers and how it was made
    (``federation``, ``privacy``, kept in ``attrs``), with ``summary()``."""

    _title = "Result (federated)"

    @property
    def _constructor(self) -> Callable[..., pd.DataFrame]:
        return type(self)

    @property
    def federation(self) -> dict[str, Any]:
        return dict(self.attrs.get("federation", {}))

    @property
    def privacy(self) -> dict[str, Any]:
        return dict(self.attrs.get("privacy", {}))

    def summary(self) -> Summary:
        return frame_summary(self, self._title)

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Any:
        made = cls(frame)
        made.attrs.update(frame.attrs)
        return made


class DescriptiveStats(ResultFrame):
    """descriptive_stats' table (count, missing, mean, std per variable, dataset, group)."""

    _title = "Descriptive statistics (federated)"


class Histogram(ResultFrame):
    """histogram's table, with ``plot()``."""

    _title = "Histogram (federated)"

    def plot(self, ax: Any = None, path: str | Path | None = None,  # type: ignore[override]
             **bar: Any) -> Any:
        return plot_histogram(self, ax, path, **bar)
