"""A synthetic stroke registry, made up from scratch (no real patient is behind any row).

Three hospitals with somewhat different case mixes: age, sex, NIHSS at admission,
onset-to-door minutes, thrombolysis, modified Rankin scale at 90 days, days to death or
censoring, and death. The relations are plausible, not clinical truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stats.datamodel import DataModel, Variable

HOSPITALS = {  # name: (patients, mean age, mean NIHSS, thrombolysis rate)
    "hosp_a": (3000, 71.0, 7.0, 0.22),
    "hosp_b": (2400, 74.0, 8.5, 0.17),
    "hosp_c": (3600, 69.0, 6.0, 0.27),
}
FOLLOW_UP_DAYS = 365


def stroke_registry(name: str, patients: int, mean_age: float, mean_nihss: float,
                    thrombolysis_rate: float, seed: int) -> pd.DataFrame:
    # synthetic data only: a seeded numpy generator is fine here (never for masks or noise)
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(mean_age, 12.0, patients), 18, 100).round(0)
    sex = rng.choice(["F", "M"], size=patients, p=[0.48, 0.52])
    nihss = np.clip(rng.gamma(2.0, mean_nihss / 2.0, patients).round(0), 0, 42)
    onset_to_door = np.clip(rng.lognormal(np.log(120), 0.7, patients).round(0), 10, 1440)
    eligible = onset_to_door <= 270
    thrombolysis = (eligible & (rng.random(patients) < thrombolysis_rate / 0.7)).astype(int)
    severity = 0.05 * (age - 70) + 0.18 * nihss - 0.8 * thrombolysis + rng.normal(0, 1.2, patients)
    mrs = np.clip(np.round(1.5 + severity), 0, 6).astype(int)
    hazard = 0.0006 * np.exp(0.045 * (age - 70) + 0.08 * nihss - 0.3 * thrombolysis)
    time_to_death = rng.exponential(1.0 / hazard)
    death = (time_to_death <= FOLLOW_UP_DAYS).astype(int)
    days = np.where(death == 1, np.ceil(time_to_death), FOLLOW_UP_DAYS).astype(int)
    mrs = np.where(death == 1, 6, np.minimum(mrs, 5))
    nihss_missing = rng.random(patients) < 0.03
    frame = pd.DataFrame({
        "dataset": name, "age": age, "sex": sex, "nihss": nihss,
        "onset_to_door_min": onset_to_door, "thrombolysis": thrombolysis, "mrs_90d": mrs,
        "days_to_event": days, "death": death,
    })
    frame.loc[nihss_missing, "nihss"] = np.nan
    return frame


def three_hospitals(seed: int = 2026, scale: float = 1.0) -> dict[str, pd.DataFrame]:
    return {name: stroke_registry(name, max(20, int(n * scale)), age, nihss, rate, seed + i)
            for i, (name, (n, age, nihss, rate)) in enumerate(HOSPITALS.items())}


def stroke_model(datasets: tuple[str, ...] = tuple(HOSPITALS)) -> DataModel:
    """The registry's data model, written as a data owner writes one (``stroke:1``): every
    bound and category list is declared, not read from the rows, so it can be shared and
    differential privacy can rely on it."""
    variables = [
        Variable("dataset", "hospital", "text", True, datasets),
        Variable("age", "age at admission", "int", False, min=18, max=100, units="years"),
        Variable("sex", "sex", "text", True, ("F", "M")),
        Variable("nihss", "NIHSS at admission", "int", False, min=0, max=42),
        Variable("onset_to_door_min", "onset to door", "int", False, min=10, max=1440,
                 units="minutes"),
        Variable("thrombolysis", "thrombolysed (1) or not (0)", "int", False, min=0, max=1),
        Variable("mrs_90d", "modified Rankin scale at 90 days", "int", False, min=0, max=6),
        Variable("days_to_event", "days to death or censoring", "int", False, min=0,
                 max=FOLLOW_UP_DAYS, units="days"),
        Variable("death", "died (1) within follow-up, or not (0)", "int", False, min=0, max=1),
    ]
    return DataModel("stroke", "1", {v.code: v for v in variables},
                     label="Synthetic stroke registry")
