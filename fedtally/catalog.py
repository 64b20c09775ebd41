"""The statistics catalog as methods of a federation: ``fed.linear_regression(...)`` is
:func:`fedtally.methods.linear_regression.linear_regression` with ``fed`` passed in; the methods
are those of the registry (:mod:`fedtally.methods.registry`). Every
method accepts ``datasets=``, ``filters=``, ``data_model=``, ``privacy=``, ``strict=`` and
``progress=``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedtally import display, exareme2
from fedtally.analyses import Analyses, call_options
from fedtally.methods.anova_oneway import AnovaOnewayResult
from fedtally.methods.anova_twoway import AnovaTwowayResult
from fedtally.methods.chi_square import ChiSquareResult
from fedtally.methods.kaplan_meier import KaplanMeierTable
from fedtally.methods.kmeans import KMeansResult
from fedtally.methods.linear_regression import LinearRegressionResult
from fedtally.methods.linear_regression_cv import LinearRegressionCVResult
from fedtally.methods.logistic_regression import LogisticRegressionResult
from fedtally.methods.logistic_regression_cv import LogisticRegressionCVResult
from fedtally.methods.logrank_test import LogrankResult
from fedtally.methods.naive_bayes_categorical import CategoricalNaiveBayes
from fedtally.methods.naive_bayes_gaussian import GaussianNaiveBayes
from fedtally.methods.pca import PCAResult
from fedtally.methods.pearson_correlation import PearsonResult
from fedtally.methods.registry import methods
from fedtally.methods.ttests import TTestResult


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
        LinearRegressionResult: display._ols,
        LogisticRegressionResult: display._logit,
        TTestResult: display._ttest,
        ChiSquareResult: display._chi2,
        AnovaOnewayResult: display._anova1,
        AnovaTwowayResult: display._anova2,
        PearsonResult: display._pearson,
        PCAResult: display._pca,
        KMeansResult: display._kmeans,
        GaussianNaiveBayes: display._naive_bayes,
        CategoricalNaiveBayes: display._naive_bayes,
        LogrankResult: display._logrank,
    }
    for cls, render_ in classes.items():
        cls.summary = display._summary_method(render_)  # type: ignore[attr-defined]
        cls.__repr__ = display.concise_repr  # type: ignore[method-assign]
    for cls in (LinearRegressionCVResult, LogisticRegressionCVResult):
        cls.__repr__ = display.concise_repr  # type: ignore[method-assign]
    PCAResult.plot = display.plot_scree  # type: ignore[attr-defined]
    KaplanMeierTable.plot = display.plot_kaplan_meier  # type: ignore[assignment,method-assign]


attach_display()  # summary(), a concise repr and plot() on the result types
