"""The analyses every federation client offers, whatever carries its queries.

:class:`Analyses` holds the researcher-facing methods; a backend supplies ``catalog()`` (what
the online nodes serve) and ``_execute()`` (one signed secure-sum query): the network
client :class:`fedtally.client.Federation`, or :class:`fedtally.simulated.SimulatedFederation`,
which runs the real node code and real secure-sum rounds in memory.
"""

from __future__ import annotations

import functools
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, TypeVar

import pandas as pd

from fedtally import centring, coverage, progress, results
from fedtally.coverage import Scope
from fedtally.display import DescriptiveStats
from fedtally.dp import privacy_spec
from fedtally.receipts import Receipts
from protocol.errors import QueryError
from protocol.service_messages import QueryResult
from stats import filters as filter_trees
from stats.datamodel import DataModel, PlanModel
from stats.planner import layout
from stats.plans import Layout
from stats.query import QuerySpec
from stats.suggest import json_failure, unknown

T = TypeVar("T")
progress_bar = progress.bar
FilterLike = str | Mapping[str, Any] | filter_trees.Filter | None
DEFAULT_MAX_ROWS_PER_NODE = 1 << 24
DEFAULT_DP_HONEST_NODES = 1


def filter_tree(filters: FilterLike) -> filter_trees.Filter | None:
    """A caller's filter as a tree: an expression string, the MIP's QueryBuilder JSON, our
    own JSON form, or a tree already."""
    if filters is None or isinstance(filters, filter_trees.Filter):
        return filters
    if isinstance(filters, str) and filters.lstrip().startswith("{"):
        # the MIP's QueryBuilder JSON as text (as an Exareme2 request carries it): parsed as
        # data, never evaluated
        try:
            filters = json.loads(filters)
        except ValueError as exc:
            raise QueryError(f"the filter looks like QueryBuilder JSON but is not valid "
                             f"JSON{json_failure(exc)}") from None
    if isinstance(filters, str):
        return filter_trees.parse_expression(filters)
    if isinstance(filters, Mapping) and ("rules" in filters or "condition" in filters):
        return filter_trees.parse_querybuilder(filters)
    return filter_trees.from_json(filters)


def call_options(fn: Callable[..., T]) -> Callable[..., T]:
    """Give a researcher-facing method the options every analysis takes: ``strict``
    (an incomplete answer raises :class:`fedtally.IncompleteAnswerError` instead of warning
    with :class:`fedtally.IncompleteAnswer`; default: the connection's ``strict``) and
    ``progress`` (a progress bar over the method's secure-sum rounds)."""

    @functools.wraps(fn)
    def method(self: Any, *args: Any, strict: bool | None = None, progress: bool = False,
               **kwargs: Any) -> T:
        with coverage.call(strict), progress_bar(progress, fn.__name__,
                                                 kwargs.get("max_iter")):
            return fn(self, *args, **kwargs)

    return method


class Analyses(ABC):
    """Researcher-facing analyses over a federation. ``strict`` (per connection; every
    method also takes ``strict=``) turns incomplete answers into errors."""

    strict: bool = False

    _models: dict[str, DataModel]
    #: the nodes' signed ledger heads that came with results (fedtally/receipts.py)
    _receipts: Receipts
    max_rows_per_node: int = DEFAULT_MAX_ROWS_PER_NODE
    dp_honest_nodes: int = DEFAULT_DP_HONEST_NODES
    #: mask mode: contributors commit to their vectors and results are checked against them
    verifiable_totals: bool = False

    @abstractmethod
    def catalog(self) -> dict[str, Any]:
        """Per online node, its data models and the datasets it holds (metadata only)."""

    @abstractmethod
    def _execute(self, spec: QuerySpec, plan: Layout) -> QueryResult:
        """Run one query through a secure sum and return the raw result."""

    def data_models(self) -> dict[str, DataModel]:
        self.catalog()
        return dict(self._models)

    def datasets(self) -> pd.DataFrame:
        """One row per (data model, dataset): the online nodes holding it (``nodes``, empty
        when none is online), ``online`` (whether any is) and its variables. Every dataset a
        known data model declares is listed, so a dataset whose node is down stays visible.
        Metadata only: no row counts, no values."""
        catalog = self.catalog()
        holders: dict[tuple[str, str], list[str]] = {}
        for node, entry in catalog["nodes"].items():
            for model, info in entry["data_models"].items():
                for dataset in info["datasets_held"]:
                    holders.setdefault((model, dataset), []).append(node)
        for name, model_ in self._models.items():
            for dataset in model_.datasets():
                holders.setdefault((name, dataset), [])
        records = []
        for (model, dataset), nodes in sorted(holders.items()):
            variables = [v for v in self._models[model].variables if v != "dataset"]
            records.append({"data_model": model, "dataset": dataset, "nodes": sorted(nodes),
                            "online": bool(nodes), "variables": variables})
        frame = pd.DataFrame.from_records(
            records, columns=["data_model", "dataset", "nodes", "online", "variables"])
        return frame.set_index(["data_model", "dataset"])

    # --- queries ---------------------------------------------------------------------------

    def _resolve(self, data_model: str | None, datasets: Sequence[str] | str | None
                 ) -> tuple[DataModel, Scope]:
        """The data model, and the datasets asked (all the model declares by default) with
        the online nodes holding each, from the aggregator's catalog."""
        catalog = self.catalog()
        served = sorted({m for e in catalog["nodes"].values() for m in e["data_models"]})
        if data_model is None:
            if len(served) != 1:
                raise QueryError(f"name a data_model: the federation serves {served or 'none'}")
            data_model = served[0]
        if data_model not in self._models:
            raise QueryError(unknown("data model", data_model, sorted(self._models))
                             + f" (served: {served})")
        model = self._models[data_model]
        holders: dict[str, list[str]] = {}
        for node, entry in sorted(catalog["nodes"].items()):
            for dataset in entry["data_models"].get(data_model, {}).get("datasets_held", []):
                holders.setdefault(dataset, []).append(node)
        if datasets is None:
            datasets = model.datasets() or sorted(holders)
        elif isinstance(datasets, str):
            datasets = [datasets]
        for dataset in datasets:
            if dataset not in model.datasets():
                raise QueryError(unknown("dataset", dataset, model.datasets(), data_model)
                                 + f" (known: {list(model.datasets())})")
        return model, Scope(tuple(dict.fromkeys(datasets)),
                            {d: tuple(n) for d, n in holders.items()})

    @staticmethod
    def _filter_json(filters: FilterLike, model: DataModel) -> Any:
        tree = filter_tree(filters)
        if tree is None:
            return None
        tree.check(model)
        return tree.to_json()

    def statistic(self, method: str, *, variables: Sequence[str] = (), by: str | None = None,
                  datasets: Sequence[str] | None = None, filters: FilterLike = None,
                  data_model: str | None = None, kind: str = "",
                  parameters: Mapping[str, Any] | None = None,
                  privacy: Any = None) -> results.Statistic:
        """Run one secure-sum query for ``method`` and return its totals by slot key.
        The building block of every analysis (see :mod:`fedtally.methods`).
        ``privacy`` is None (exact) or a :class:`fedtally.DP`.

        Datasets asked that no online node holds are left out of the query; whatever the
        answer does not cover is reported by an :class:`fedtally.IncompleteAnswer` warning
        (an error under ``strict``), and in the result's ``federation``."""
        model, scope = self._resolve(data_model, datasets)
        strict = coverage.strict_now(self.strict)
        if not scope.sent:
            raise QueryError(f"no online node holds dataset(s) {list(scope.asked)} of "
                             f"{model.name}")
        if scope.offline and strict:  # before anything is sent or charged
            raise coverage.IncompleteAnswerError(coverage.message(
                [f"dataset {d!r}: {coverage.OFFLINE}" for d in scope.offline], scope.offline))
        spec = QuerySpec(method, model.name, scope.sent, tuple(variables), by,
                         self._filter_json(filters, model), privacy=privacy_spec(privacy),
                         kind=kind, parameters=dict(parameters or {}))
        # sums of squares are centred and scaled by public values (fedtally/centring.py)
        return centring.precise(spec, model,
                                lambda one: self._run(one, model, scope, strict))

    def _run(self, spec: QuerySpec, model: DataModel, scope: Scope, strict: bool
             ) -> results.Statistic:
        plan = layout(spec, PlanModel(model), self.max_rows_per_node,
                      honest_nodes=self.dp_honest_nodes, verifiable=self.verifiable_totals)
        reply = self._execute(spec, plan)
        self._receipts.keep(reply.receipts)
        values = results.totals(reply)
        # the blinding digits served the total's check and are noise to everyone else
        kept = plan.without_blinding()
        stat = results.Statistic(spec, kept, values[:kept.length], model, reply, scope)
        if plan.noise is not None:
            coverage.released_dp(plan.noise.rho)
        progress.tick()
        federation = stat.federation
        # a dataset that released no rows answered: its note says so, it is not "not covered"
        coverage.report(coverage.problems(federation, spec.kind),
                        list(federation["datasets_not_covered"]), strict=strict)
        return stat

    def receipts(self) -> pd.DataFrame:
        """The newest ledger receipt of every node that answered you (its signed head after
        your query's entry): keep them, so that an auditor can tell a ledger that was later
        truncated or rolled back (``fedtally audit verify --receipts``)."""
        return self._receipts.frame()

    def scope(self, data_model: str | None = None,
              datasets: Sequence[str] | str | None = None) -> Scope:
        """The datasets a query would ask for, and the online nodes holding each."""
        return self._resolve(data_model, datasets)[1]

    def model(self, data_model: str | None = None) -> DataModel:
        """The data model (the only one served, when ``data_model`` is None)."""
        return self._resolve(data_model, None)[0]

    @call_options
    def count(self, filters: FilterLike = None, datasets: Sequence[str] | None = None, *,
              data_model: str | None = None, privacy: Any = None) -> Any:
        """Number of rows matching ``filters`` over ``datasets`` (all datasets by default):
        a :class:`fedtally.results.Count` (an int that also carries ``federation`` and
        ``privacy``), or with ``privacy=fedtally.DP(...)`` a
        :class:`fedtally.results.NoisyValue` (the noisy total rounded and clipped at 0, its
        noise and a 95% interval)."""
        stat = self.statistic("count", filters=filters, datasets=datasets,
                              data_model=data_model, privacy=privacy)
        keys = [("rows", d) for d in stat.spec.datasets]
        if stat.layout.noise is None:
            return results.Count(sum(stat.count(k) for k in keys), stat.federation,
                                 stat.privacy)
        raw = float(sum((stat.exact(k) for k in keys), Fraction(0)))
        noise = math.sqrt(sum(stat.noise_std(k) ** 2 for k in keys))
        value = results.NoisyValue.count(raw, noise, stat.privacy, stat.federation)
        results.warn_if_noisy("count", value.value, noise)
        return value

    @call_options
    def descriptive_stats(self, variables: Sequence[str] | str, by: str | None = None,
                          datasets: Sequence[str] | None = None, filters: FilterLike = None, *,
                          data_model: str | None = None, privacy: Any = None) -> pd.DataFrame:
        """count, missing, mean and std per variable, per dataset and over all datasets
        (and per level of ``by``). No exact min or max: those are single patients' values.
        With ``privacy=fedtally.DP(...)`` the counts and moments are noisy, and columns
        ``count_noise_std``, ``mean_ci_low`` and ``mean_ci_high`` (95%, noise included)
        are added; ``attrs["privacy"]`` says what was spent."""
        if isinstance(variables, str):
            variables = [variables]
        stat = self.statistic("descriptive_stats", variables=variables, by=by,
                              datasets=datasets, filters=filters, data_model=data_model,
                              privacy=privacy)
        return DescriptiveStats.of(results.descriptive_stats(stat))
