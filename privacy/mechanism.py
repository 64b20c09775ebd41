"""What a node records about a query, and the arithmetic an auditor redoes on it.

:class:`QueryRecord` is what the node hands to :meth:`privacy.ledger.Ledger.record_query`;
:class:`Mechanism` describes the DP noise it calibrated. The ledger itself computes epsilon
(from the rho it charges and a delta: the request's, else the policy's reporting delta), so no
epsilon a researcher sends can reach the ledger. The two checks below run in the writer
(which refuses to record a mechanism that fails them) and in the verifier (where a failure is
a finding), so both sides use the same arithmetic:

- :func:`privacy_loss_error`: epsilon and delta follow from rho (Canonne, Kamath, Steinke
  2020, Corollary 13, :func:`privacy.accounting.epsilon_from_rho`);
- :func:`calibration_error`: rho is at least what the noise scale, L2 sensitivity, honest
  nodes and dimension give (Kairouz, Liu, Steinke 2021, Theorem 1,
  :func:`privacy.calibration.distributed_rho`, with its default L1 sensitivity for integer
  vectors).

Both recompute floating-point functions, which another machine's ``libm`` may round in the
last bits; :data:`RELATIVE_TOLERANCE` (1e-9) absorbs that and nothing a node could gain from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privacy import entry as E
from privacy import fields as F
from privacy.accounting import InvalidPrivacyRequest, epsilon_from_rho
from privacy.calibration import distributed_rho
from privacy.errors import InvalidRequest
from privacy.units import NANO_PER_RHO, Number

MECHANISM = "distributed discrete gaussian (zCDP)"
RELATIVE_TOLERANCE = 1e-9
MAX_HONEST = 1_000_000
MAX_DIMENSION = 1 << 40


@dataclass(frozen=True)
class Mechanism:
    """The DP mechanism of one query as this node calibrated it (the engine's NoisePlan).

    ``rho`` is what the noise was calibrated to (charged rounded up to a nano-rho);
    ``noise_scale`` is sigma of this node's discrete Gaussian share; ``bounds`` maps each
    clipped variable to ``[low, high]``; ``delta`` is the request's delta, if it named one.
    There is deliberately no epsilon here: the ledger computes it.
    """

    rho: Number
    noise_scale: float
    honest_nodes: int
    dimension: int
    sensitivity: float
    bounds: Mapping[str, Sequence[float]] = field(default_factory=dict)
    delta: float | None = None
    name: str = MECHANISM


@dataclass(frozen=True)
class QueryRecord:
    """One query as this node received it, and its decision.

    ``datasets`` are the datasets the query names; ``held`` those of them this node holds
    (``None``: all), which an ``answered-dp`` query charges. ``filters`` is the row filter as
    a JSON value (or its JSON text), ``None`` for none. ``reason`` is the refusal code of a
    ``refused`` query; ``mechanism`` is required for ``answered-dp`` and may describe the
    requested DP mechanism of a refused query.
    """

    query_id: str
    researcher: str
    method: str
    datasets: Sequence[str]
    decision: str
    query_digest: str
    variables: Sequence[str] = ()
    filters: Any = None
    reason: str = ""
    mechanism: Mechanism | None = None
    held: Sequence[str] | None = None


@dataclass(frozen=True)
class Checked:
    """A validated record: the query entry's fields (without seq, time, policy digest,
    rho and epsilon, which the ledger fills in) and the datasets to charge."""

    values: dict[str, object]
    charged: tuple[str, ...]
    rho: Number | None
    delta: float | None


def check_record(record: QueryRecord) -> Checked:
    """Validate a record; :class:`InvalidRequest` before anything is written."""
    if not isinstance(record, QueryRecord):
        raise InvalidRequest("record_query takes a QueryRecord")
    if record.decision not in E.DECISIONS:
        raise InvalidRequest(f"decision must be one of {sorted(E.DECISIONS)}")
    datasets = F.names(record.datasets, "datasets")
    held = datasets if record.held is None else F.names(record.held, "held datasets",
                                                        empty=True)
    if not set(held) <= set(datasets):
        raise InvalidRequest("held datasets must be datasets of the query")
    filters = record.filters
    if isinstance(filters, str):
        filters = F.json_value(filters, "filters") if filters else None
    values: dict[str, object] = dict(
        query_id=F.hex_text(record.query_id, "query_id"),
        researcher=F.name(record.researcher, "researcher"),
        method=F.name(record.method, "method"),
        datasets=F.canonical_json(list(datasets), "datasets"),
        held=F.canonical_json(list(held), "held"),
        variables=F.canonical_json(list(F.names(record.variables, "variables", empty=True)),
                                   "variables"),
        filters="" if filters is None else F.canonical_json(filters, "filters"),
        query_digest=F.hex_text(record.query_digest, "query_digest"),
        decision=record.decision,
    )
    if record.decision == E.REFUSED:
        values["reason"] = F.reason_code(record.reason)
    elif record.reason:
        raise InvalidRequest("only a refused query has a reason code")
    mech = record.mechanism
    if record.decision == E.ANSWERED_DP and mech is None:
        raise InvalidRequest("an answered-dp query needs its mechanism")
    if record.decision == E.ANSWERED_EXACT and mech is not None:
        raise InvalidRequest("an exact answer has no DP mechanism")
    if mech is None:
        return Checked(values, (), None, None)
    if not isinstance(mech, Mechanism):
        raise InvalidRequest("mechanism must be a Mechanism")
    values.update(
        mechanism=F.name(mech.name, "mechanism"),
        noise_scale=decimal(mech.noise_scale, "noise_scale"),
        sensitivity=decimal(mech.sensitivity, "sensitivity"),
        honest_nodes=F.count(mech.honest_nodes, "honest_nodes", MAX_HONEST),
        dimension=F.count(mech.dimension, "dimension", MAX_DIMENSION),
        bounds=F.canonical_json(check_bounds(mech.bounds), "bounds"),
    )
    delta = None if mech.delta is None else check_delta(mech.delta)
    charged = held if record.decision == E.ANSWERED_DP else ()
    return Checked(values, charged, mech.rho, delta)


def decimal(value: object, what: str) -> str:
    """A positive float as its shortest round-trip text (what the verifier parses back)."""
    return repr(F.real(value, what))


def check_delta(value: object) -> float:
    x = F.real(value, "delta")
    if not x < 1:
        raise InvalidRequest("delta must be in (0, 1)")
    return x


def check_bounds(bounds: object) -> dict[str, list[float]]:
    if not isinstance(bounds, Mapping):
        raise InvalidRequest("bounds map variables to [low, high]")
    out = {}
    for variable, pair in bounds.items():
        F.name(variable, "a bounded variable")
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidRequest(f"bounds of {variable!r} are [low, high]")
        low, high = (F.real(v, f"a bound of {variable!r}", positive=False) for v in pair)
        if low > high:
            raise InvalidRequest(f"bounds of {variable!r} must have low <= high")
        out[variable] = [low, high]
    return out


def rho_of(rho_nano: int) -> float:
    return rho_nano / NANO_PER_RHO


def epsilon_for(rho_nano: int, delta: float) -> float:
    """The epsilon the ledger records for a charge of ``rho_nano`` at ``delta``."""
    return epsilon_from_rho(rho_of(rho_nano), delta)


def privacy_loss_error(rho_nano: int, epsilon: str, delta: str) -> str | None:
    """Why the recorded (epsilon, delta) do not follow from rho; ``None`` when they do."""
    try:
        d = check_delta(delta)
        e = F.real(epsilon, "epsilon", positive=False)
    except InvalidRequest as exc:
        return str(exc)
    if rho_nano <= 0:
        return "a recorded epsilon needs a positive rho"
    expected = epsilon_for(rho_nano, d)
    if abs(e - expected) > RELATIVE_TOLERANCE * max(expected, 1.0):
        return (f"epsilon {epsilon} at delta {delta} does not follow from rho "
                f"{rho_of(rho_nano)!r}: it gives epsilon {expected!r}")
    return None


def calibration_error(rho_nano: int, noise_scale: str, sensitivity: str, honest_nodes: int,
                      dimension: int) -> str | None:
    """Why the recorded rho is less than the recorded noise gives; ``None`` when it is not."""
    try:
        sigma = F.real(noise_scale, "noise_scale")
        d2 = F.real(sensitivity, "sensitivity")
        h = F.count(honest_nodes, "honest_nodes", MAX_HONEST)
        d = F.count(dimension, "dimension", MAX_DIMENSION)
        needed = distributed_rho(sigma, d2, h, dim=d)
    except (InvalidRequest, InvalidPrivacyRequest) as exc:
        return f"the mechanism cannot be recomputed: {exc}"
    if not math.isfinite(needed) or rho_of(rho_nano) < needed * (1 - RELATIVE_TOLERANCE):
        return (f"rho {rho_of(rho_nano)!r} is less than the {needed!r} that noise scale "
                f"{noise_scale}, L2 sensitivity {sensitivity}, {h} honest nodes and "
                f"dimension {d} give")
    return None
