"""Linear regression on noisy sufficient statistics: close to exact when the noise is
small, and its reported noise matches the spread of repeated releases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedtally
from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from support import declared_model

#: a budget nothing exhausts; exact answers granted too, to compare against
UNLIMITED = Policy.from_dict({"budgets": {"alice": {"*": {"rho": 1e6}}},
                              "exact_access": "*"})


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> SimulatedFederation:
    rng = np.random.default_rng(3)

    def frame(n: int) -> pd.DataFrame:
        x1, x2 = rng.uniform(0, 10, n), rng.uniform(-5, 5, n)
        y = np.clip(1 + 2 * x1 - 0.5 * x2 + rng.normal(0, 1, n), -20, 40)
        return pd.DataFrame({"x1": x1, "x2": x2, "y": y})

    data = {f"node{i}": frame(2000) for i in range(3)}
    model = declared_model(pd.concat([d.assign(dataset=n) for n, d in data.items()]))
    return SimulatedFederation(data, model, seed=2, policy=UNLIMITED,
                               ledger_dir=tmp_path_factory.mktemp("ledgers"))


def test_small_noise_gives_the_exact_fit(fed: SimulatedFederation) -> None:
    exact = fed.linear_regression("y", ["x1", "x2"])
    noisy = fed.linear_regression("y", ["x1", "x2"], privacy=fedtally.DP(rho=1e5))
    assert np.allclose(noisy.params, exact.params, rtol=1e-3, atol=1e-3)
    assert noisy.noise_std is not None and exact.noise_std is None
    assert noisy.privacy["mode"] == "dp"


def test_reported_noise_matches_repeated_releases(fed: SimulatedFederation) -> None:
    releases = [fed.linear_regression("y", ["x1", "x2"], privacy=fedtally.DP(rho=20.0))
                for _ in range(60)]
    spread = np.std([r.params.to_numpy() for r in releases], axis=0, ddof=1)
    reported = np.mean([r.noise_std.to_numpy() for r in releases], axis=0)
    assert np.all(np.abs(spread / reported - 1) < 0.35), (spread, reported)
    exact = fed.linear_regression("y", ["x1", "x2"]).params.to_numpy()
    covered = np.mean([np.all((r.conf_int()[0] <= exact) & (exact <= r.conf_int()[1]))
                       for r in releases])
    assert covered >= 0.8
