"""zCDP accounting: CKS 2020 conversions, integer budgets, composition, request validation."""

from __future__ import annotations

import math
from decimal import Decimal

import opendp.prelude as dp
import pytest

from privacy.accounting import (
    MAX_NANO,
    NANO_PER_RHO,
    Budget,
    DPRequest,
    InvalidPrivacyRequest,
    compose,
    epsilon_from_rho,
    rho_from_epsilon_delta,
)

dp.enable_features("contrib")

RHOS = [1e-6, 1e-3, 0.01, 0.05, 0.5, 1.0, 10.0, 1000.0]
DELTAS = [1e-12, 1e-9, 1e-6, 1e-3, 0.1, 0.5]
EPSILONS = [0.01, 0.1, 0.5, 1.0, 3.0, 10.0]


def _grid_epsilon(rho: float, delta: float) -> float:
    """Independent oracle: CKS 2020 Cor. 13 minimised over a dense log-grid of alpha."""
    big_l = math.log(1 / delta)
    best = math.inf
    for i in range(1, 40_001):
        u = 10 ** (-9 + 13 * i / 40_000)  # alpha - 1 from 1e-9 to 1e4
        eps = (1 + u) * rho + (big_l - math.log1p(u)) / u + math.log(u / (1 + u))
        best = min(best, eps)
    return max(0.0, best)


def _opendp_epsilon(rho: float, delta: float) -> float:
    meas = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float),
                              scale=1 / math.sqrt(2 * rho))
    return dp.c.make_zCDP_to_approxDP(meas).map(1.0).epsilon(delta)


def test_known_value_is_below_the_standard_bound() -> None:
    rho, delta = 0.5, 1e-6
    standard = rho + 2 * math.sqrt(rho * math.log(1 / delta))  # Bun-Steinke 2016, Prop 1.3
    tight = epsilon_from_rho(rho, delta)
    assert tight < standard
    assert standard == pytest.approx(5.756521769756932)
    assert tight == pytest.approx(5.2215344445, rel=1e-9)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("delta", DELTAS)
def test_epsilon_is_the_exact_infimum_and_never_below_it(rho: float, delta: float) -> None:
    eps = epsilon_from_rho(rho, delta)
    grid = _grid_epsilon(rho, delta)
    assert eps <= grid + 1e-10 * max(1.0, grid)  # at least as tight as a dense grid
    assert eps >= grid - 1e-6 * max(1.0, grid)  # and the grid is close to the infimum
    assert eps <= rho + 2 * math.sqrt(rho * math.log(1 / delta))


@pytest.mark.parametrize("rho", [1e-4, 0.05, 0.5, 2.0])
@pytest.mark.parametrize("delta", [1e-9, 1e-6, 1e-3])
def test_epsilon_agrees_with_opendp(rho: float, delta: float) -> None:
    assert epsilon_from_rho(rho, delta) == pytest.approx(_opendp_epsilon(rho, delta), rel=1e-6)


@pytest.mark.parametrize("epsilon", EPSILONS)
@pytest.mark.parametrize("delta", DELTAS[:-1])
def test_round_trip_is_conservative_and_tight(epsilon: float, delta: float) -> None:
    rho = rho_from_epsilon_delta(epsilon, delta)
    assert rho > 0
    assert epsilon_from_rho(rho, delta) <= epsilon  # conservative direction
    assert epsilon_from_rho(rho * (1 + 1e-9), delta) > epsilon * (1 - 1e-6)  # and tight
    # the other way round
    eps = epsilon_from_rho(0.3, delta)
    back = rho_from_epsilon_delta(eps, delta)
    assert back <= 0.3 * (1 + 1e-12) and back == pytest.approx(0.3, rel=1e-9)


def test_conversions_are_monotone() -> None:
    for delta in DELTAS:
        eps = [epsilon_from_rho(r, delta) for r in RHOS]
        assert all(a <= b for a, b in zip(eps, eps[1:], strict=False))
    for rho in RHOS:
        eps = [epsilon_from_rho(rho, d) for d in DELTAS]
        assert all(a >= b for a, b in zip(eps, eps[1:], strict=False))
    rhos = [rho_from_epsilon_delta(e, 1e-6) for e in EPSILONS]
    assert all(a < b for a, b in zip(rhos, rhos[1:], strict=False))


def test_large_delta_may_give_zero_epsilon() -> None:
    assert epsilon_from_rho(1e-6, 0.5) == 0.0  # (0, 0.5)-DP holds; never negative


@pytest.mark.parametrize(("rho", "delta"), [
    (0.0, 1e-6), (-1.0, 1e-6), (math.inf, 1e-6), (math.nan, 1e-6), (1.0, 0.0), (1.0, 1.0),
    (1.0, -0.1), (1.0, math.nan), (True, 1e-6), ("1", 1e-6),
])
def test_conversions_refuse_bad_arguments(rho: object, delta: object) -> None:
    with pytest.raises(InvalidPrivacyRequest):
        epsilon_from_rho(rho, delta)  # type: ignore[arg-type]
    with pytest.raises(InvalidPrivacyRequest):
        rho_from_epsilon_delta(rho, delta)  # type: ignore[arg-type]


# ---------------------------------------------------------------- budgets


def test_budget_units_and_rounding() -> None:
    assert Budget.from_rho(0.05, rounding="down").nano_rho == 50_000_000
    assert Budget.from_rho(0.05, rounding="up").nano_rho == 50_000_000
    assert Budget.from_rho(0.3, rounding="down").nano_rho == 300_000_000  # not 299_999_999
    assert Budget.from_rho(1.23456789012, rounding="down").nano_rho == 1_234_567_890
    assert Budget.from_rho(1.23456789012, rounding="up").nano_rho == 1_234_567_891
    assert Budget.from_rho(Decimal("0.1"), rounding="down").nano_rho == 100_000_000
    assert Budget(50_000_000).rho == 0.05
    assert str(Budget(50_000_000)) == "rho=0.05" and str(Budget(2 * NANO_PER_RHO)) == "rho=2"
    with pytest.raises(InvalidPrivacyRequest):
        Budget.from_rho(-0.1, rounding="down")
    with pytest.raises(InvalidPrivacyRequest):
        Budget.from_rho(0.1, rounding="nearest")  # type: ignore[arg-type]
    with pytest.raises(InvalidPrivacyRequest):
        Budget(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidPrivacyRequest):
        Budget(-1)
    with pytest.raises(InvalidPrivacyRequest):
        Budget(MAX_NANO + 1)


def test_composition_adds_rho() -> None:
    a, b = Budget.from_rho(0.05, rounding="up"), Budget.from_rho(0.125, rounding="up")
    assert (a + b).nano_rho == 175_000_000
    assert compose(a, b, a).nano_rho == 225_000_000
    assert compose() == Budget(0)
    assert (b - a).nano_rho == 75_000_000
    with pytest.raises(InvalidPrivacyRequest):
        _ = a - b
    assert a < b and Budget(5) == Budget(5)
    # composition in rho, then conversion: 10 rounds of rho 0.01 at delta 1e-6
    total = compose(*[Budget.from_rho(0.01, rounding="up")] * 10)
    assert total.epsilon(1e-6) == pytest.approx(epsilon_from_rho(0.1, 1e-6))
    assert total.epsilon(1e-6) < 10 * epsilon_from_rho(0.01, 1e-6)  # better than eps-adding
    assert Budget(0).epsilon(1e-6) == 0.0


def test_split_never_exceeds_the_whole() -> None:
    whole = Budget(1_000_000_001)
    part = whole.split(3)
    assert compose(*[part] * 3) <= whole
    with pytest.raises(InvalidPrivacyRequest):
        whole.split(0)


# ---------------------------------------------------------------- requests


def test_rho_request() -> None:
    req = DPRequest(rho=0.05)
    assert req.rho == 0.05 and req.budget.nano_rho == 50_000_000
    assert req.epsilon is None and req.delta is None
    assert req.describe() == {"rho": 0.05, "epsilon": None, "delta": None}
    with_delta = DPRequest(rho=0.05, delta=1e-6)
    assert with_delta.describe()["epsilon"] == pytest.approx(epsilon_from_rho(0.05, 1e-6))
    # rounded down to the accounting unit: never less noise than asked for
    assert DPRequest(rho=0.1234567891234).budget.nano_rho == 123_456_789


@pytest.mark.parametrize(("epsilon", "delta"), [(1.0, 1e-6), (0.1, 1e-9), (8.0, 1e-5), (1, 0.01)])
def test_epsilon_delta_request_is_met(epsilon: float, delta: float) -> None:
    req = DPRequest(epsilon=epsilon, delta=delta)
    assert epsilon_from_rho(req.rho, delta) <= epsilon  # the calibrated rho implies the ask
    assert req.rho == pytest.approx(rho_from_epsilon_delta(epsilon, delta), abs=1e-9)  # unit
    assert req.rho <= rho_from_epsilon_delta(epsilon, delta)
    assert req.describe() == {"rho": req.rho, "epsilon": float(epsilon), "delta": delta}
    assert req.epsilon_at(delta) <= epsilon


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "either"),
    ({"epsilon": 1.0}, "needs delta"),
    ({"delta": 1e-6}, "either"),
    ({"epsilon": 1.0, "delta": 1e-6, "rho": 0.1}, "not both"),
    ({"epsilon": 0.0, "delta": 1e-6}, "epsilon must be > 0"),
    ({"epsilon": -1.0, "delta": 1e-6}, "epsilon must be > 0"),
    ({"epsilon": math.inf, "delta": 1e-6}, "finite"),
    ({"epsilon": math.nan, "delta": 1e-6}, "finite"),
    ({"epsilon": 1.0, "delta": 0.0}, "delta must be in (0, 1)"),
    ({"epsilon": 1.0, "delta": 1.0}, "delta must be in (0, 1)"),
    ({"epsilon": 1.0, "delta": 1.5}, "delta must be in (0, 1)"),
    ({"epsilon": 1.0, "delta": -1e-6}, "delta must be in (0, 1)"),
    ({"rho": 0.0}, "rho must be > 0"),
    ({"rho": -0.5}, "rho must be > 0"),
    ({"rho": math.inf}, "finite"),
    ({"rho": math.nan}, "finite"),
    ({"rho": True}, "number"),
    ({"rho": "0.1"}, "number"),
    ({"rho": 1e-12}, "resolution"),
    ({"rho": 1e7}, "at most"),
    ({"epsilon": 1e-12, "delta": 1e-6}, "resolution"),
    ({"rho": 0.1, "delta": 2.0}, "delta must be in (0, 1)"),
])
def test_invalid_requests_fail_with_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidPrivacyRequest, match=None) as info:
        DPRequest(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_requests_are_immutable_values() -> None:
    req = DPRequest(rho=0.05)
    assert req == DPRequest(rho=0.05) and hash(req) == hash(DPRequest(rho=0.05))
    with pytest.raises(AttributeError):
        req.epsilon = 3.0  # type: ignore[misc]
