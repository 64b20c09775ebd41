"""The statistics catalog as methods of a federation: ``fed.linear_regression(...)`` is
:func:`fedtally.methods.regression.linear_regression` with ``fed`` passed in; the methods
are those of the registry (:mod:`fedtally.methods.registry`). Every
method accepts ``datasets=``, ``filters=``, ``data_model=``, ``privacy=``, ``strict=`` and
``progress=``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedtally import display, exareme2
from fedtally.analyses import Analyses, call_options
from fedtally.methods import (
    anova,
    bayes,
    classical,
    clustering,
    cv,
    multivariate,
    regression,
    survival,
)
from fedtally.methods.registry import methods


def _method(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(fed, ...)`` as a method, with the options every analysis takes (``strict=``,
    ``progress=``: see :func:`fedtally.analyses.call_options`)."""
    return call_options(fn)


class Catalog(Analyses):
    """Every analysis of the catalog, built from secure sums: one method per registered
    function of :mod:`fedtally.methods` (see :mod:`fedtally.methods.registry`)."""

    @call_options
    def run_exareme2(self, request: dict[str, Any], algorithm: str | None = None
                     ) -> dict[str, Any]:
        """Run the body of an Exareme2 algorithm request (``{"inputdata": ..., "parameters":
        ...}``) and answer in Exareme2's output shape. ``algorithm`` is the name in
        Exareme2's URL (or give it in the request as ``"algorithm"``)."""
        return exareme2.run_exareme2(self, request, algorithm)


for _registered in methods().values():
    setattr(Catalog, _registered.name, _method(_registered.function))


def attach_display() -> None:
    """Attach ``summary``, ``__repr__`` and ``plot`` to the result classes (idempotent)."""
    classes: dict[type, Callable[[Any], display.Summary]] = {
        regression.LinearRegressionResult: display._ols,
        regression.LogisticRegressionResult: display._logit,
        classical.TTestResult: display._ttest,
        classical.ChiSquareResult: display._chi2,
        anova.AnovaOnewayResult: display._anova1,
        anova.AnovaTwowayResult: display._anova2,
        multivariate.PearsonResult: display._pearson,
        multivariate.PCAResult: display._pca,
        clustering.KMeansResult: display._kmeans,
        bayes.GaussianNaiveBayes: display._naive_bayes,
        bayes.CategoricalNaiveBayes: display._naive_bayes,
        survival.LogrankResult: display._logrank,
    }
    for cls, render_ in classes.items():
        cls.summary = display._summary_method(render_)  # type: ignore[attr-defined]
        cls.__repr__ = display.concise_repr  # type: ignore[method-assign]
    for cls in (cv.LinearRegressionCVResult, cv.LogisticRegressionCVResult):
        cls.__repr__ = display.concise_repr  # type: ignore[method-assign]
    multivariate.PCAResult.plot = display.plot_scree  # type: ignore[attr-defined]
    survival.KaplanMeierTable.plot = display.plot_kaplan_meier  # type: ignore[assignment,method-assign]


attach_display()  # summary(), a concise repr and plot() on the result types
