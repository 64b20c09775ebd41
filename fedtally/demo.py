"""`fedtally demo`: a three-hospital stroke registry, a local federation, a tour of analyses
(counts, descriptive statistics, a linear regression, Kaplan-Meier curves saved as a PNG, a
differentially private count and the budget it spent), a look at what the aggregator saw
(masked or encrypted vectors only), and an audit of a node's privacy ledger against the
receipts the researcher's client kept.

The federation's folder is a temporary one, removed at the end and never named, unless the
caller asks to keep it (``keep=True`` or a ``workdir``): then every path printed exists
afterwards. A demo that fails keeps its folder, for the logs, and says where it is.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedtally.client import Federation
from fedtally.dp import DP
from fedtally.federation import load_manifest
from fedtally.local import local_federation
from fedtally.synthetic import stroke_model, three_hospitals
from protocol.errors import FedtallyError

#: the trial budget the demo grants its researcher on every dataset, and what one DP count
#: spends of it
TRIAL_BUDGET = DP(epsilon=1.0, delta=1e-6)
DP_COUNT = DP(epsilon=0.5, delta=1e-6)
KM_FILE = "km.png"
KM_GRID = [30, 60, 90, 120, 180, 240, 300, 365]  # days: coarse enough for no small cell
AUDITED_NODE = "hosp_a"
REGRESSION = ("mrs_90d", ["age", "nihss", "thrombolysis"])


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings as one readable line in the demo's output (no source line)."""
    print(f"  ({category.__name__}: {message})")


@contextmanager
def _readable_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning
        yield


def run_demo(workdir: Path | None = None, scale: float = 1.0, protection: str = "mask",
             keep: bool = False) -> None:
    """Run the demo. With ``workdir`` (created if needed) or ``keep=True`` (a new temporary
    folder) the federation's files are kept and their folder is printed; otherwise they go
    in a temporary folder that is removed at the end and never shown."""
    logging.getLogger().setLevel(logging.WARNING)  # the demo prints; services log to files
    started = time.perf_counter()
    keep = keep or workdir is not None
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(
        prefix="fedtally-demo-"))
    failed = True
    try:
        with _readable_warnings():
            _tour(root, scale, protection, started, keep)
        failed = False
    finally:
        if keep or failed:
            print(f"\nThe federation's files are kept in {root}"
                  + (" (logs: aggregator.log, hosp_*/node.log)" if failed else ":"))
            if not failed:
                print(f"  {KM_FILE} (the Kaplan-Meier curves), aggregator.log and "
                      "hosp_*/node.log (what each process logged), hosp_*/ledger.db (the "
                      "privacy ledgers), keys/alice.receipts (the signed ledger heads the "
                      "client kept)")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _tour(root: Path, scale: float, protection: str, started: float, keep: bool) -> None:
    data = three_hospitals(scale=scale)
    pooled = pd.concat(data.values(), ignore_index=True)
    model = stroke_model()
    print("fedtally demo: a synthetic stroke registry at three hospitals "
          f"({', '.join(f'{k}: {len(v):,} patients' for k, v in data.items())}).")
    how = ("pairwise masks" if protection == "mask" else
           "threshold Paillier, a 3072-bit key that all 3 nodes decrypt together (a quorum "
           "above (3 + c)/2 with c = 1 colluding node assumed)")
    print("Starting one aggregator and three node processes on 127.0.0.1 (TLS websockets), "
          f"protected by {how}...")
    with local_federation(data, model, workdir=root, protection=protection,
                          budget=TRIAL_BUDGET) as fed:
        print(f"Federation up in {time.perf_counter() - started:.1f}s"
              + (f"; files in {root}" if keep else ""))
        _exact_answers(fed, pooled, model.name, model.label)
        _regression(fed, pooled)
        _survival(fed, pooled, root, keep)
        _differential_privacy(fed, len(pooled))
        _aggregator_view(fed, protection)
    # the nodes have stopped: their ledgers are complete files, as an auditor copies them
    _audit(root)
    print(f"\nDemo finished in {time.perf_counter() - started:.1f}s.")


def _exact_answers(fed: Federation, pooled: pd.DataFrame, model_name: str,
                   model_label: str | None) -> None:
    _section("What the federation holds (metadata only)")
    print(f"data model {model_name} ({model_label}), written by the registry's owners: "
          "every bound and category is declared, none is read from the rows")
    print(fed.datasets()[["nodes"]].to_string())

    _section("How many patients? How many over 80 with NIHSS above 10?")
    total = fed.count()
    severe_old = fed.count(filters="age > 80 and nihss > 10")
    print(f"all patients: {total:,}    age > 80 and NIHSS > 10: {severe_old:,}")
    print(f"(pandas on the pooled rows, which no one holds in real life: {len(pooled):,} and "
          f"{int(((pooled.age > 80) & (pooled.nihss > 10)).sum()):,})")

    _section("Descriptive statistics, per hospital and over all")
    print("(a node-level cell that reads 0, here the missing counts of complete variables, "
          "cannot be told from a suppressed one, so the client says so)")
    stats = fed.descriptive_stats(["age", "nihss", "onset_to_door_min", "mrs_90d"])
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(stats.to_string())
    info = stats.attrs["federation"]
    print(f"nodes asked {info['nodes_asked']}, answered {info['nodes_answered']}, "
          f"contributed {info['nodes_contributing']}; no exact min/max is ever released")

    _section("Thrombolysed patients only, by sex")
    by_lysis = fed.descriptive_stats(["mrs_90d", "age"], by="sex", filters="thrombolysis == 1")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(by_lysis.xs("all", level="dataset").to_string())


def _regression(fed: Federation, pooled: pd.DataFrame) -> None:
    y, x = REGRESSION
    _section(f"Linear regression: {y} on {', '.join(x)}")
    fit = fed.linear_regression(y, x)
    print(fit.summary())
    complete = pooled[[y, *x]].dropna()
    design = np.column_stack([np.ones(len(complete)), complete[x].to_numpy(float)])
    pooled_fit, *_ = np.linalg.lstsq(design, complete[y].to_numpy(float), rcond=None)
    gap = float(np.max(np.abs(fit.params.to_numpy() - pooled_fit)))
    print(f"(least squares on the pooled rows gives the same coefficients: largest "
          f"difference {gap:.1e}; one secure-sum round of cross-products, no row left a node)")


def _survival(fed: Federation, pooled: pd.DataFrame, root: Path, keep: bool) -> None:
    _section("Survival after stroke, by sex (Kaplan-Meier)")
    print("(nodes release per-interval counts of deaths and censorings on a public grid; "
          "censoring happens only at day 365 here, so the other intervals' censoring cells "
          "are empty and read 0)")
    table = fed.kaplan_meier("days_to_event", "death", by="sex", times=KM_GRID)
    table["pooled"] = np.concatenate([
        _grouped_km(pooled[pooled["sex"] == str(group)], KM_GRID)
        for group in table["group"].unique()])
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(table[["group", "time", "at_risk", "events", "survival", "ci_lower", "ci_upper",
                     "pooled"]].astype({"time": int}).to_string(index=False))
    print("(pooled: the same estimator on the pooled rows, which no one holds in real life)")
    try:
        ax = table.plot(path=root / KM_FILE)
    except FedtallyError as exc:  # matplotlib missing: say how to get it, go on
        print(f"(no plot: {exc})")
        return
    import matplotlib.pyplot as plt

    plt.close(ax.figure)
    where = str(root / KM_FILE) if keep else f"{KM_FILE} in the demo's folder (--keep keeps it)"
    print(f"the curves with their 95% bands drawn to {where}")


def _grouped_km(rows: pd.DataFrame, grid: list[int]) -> np.ndarray:
    """Kaplan-Meier on the grid from pooled rows: a step of 1 - deaths / at risk per
    interval (previous grid time, time], as the federated estimate computes it."""
    days, died = rows["days_to_event"].to_numpy(), rows["death"].to_numpy() == 1
    survival, previous, out = 1.0, -np.inf, []
    for end in grid:
        at_risk = np.sum(days > previous)
        deaths = np.sum(died & (days > previous) & (days <= end))
        survival *= 1 - deaths / at_risk if at_risk else 1.0
        out.append(survival)
        previous = end
    return np.array(out)


def _differential_privacy(fed: Federation, true_total: int) -> None:
    _section("Differential privacy: a noisy count and the budget it spends")
    print(f"Each node granted alice a trial budget of epsilon {TRIAL_BUDGET.epsilon} "
          f"(delta {TRIAL_BUDGET.delta:g}) on every dataset, before any query:")
    shown = ["researcher", "spent_epsilon", "limit_epsilon", "remaining_epsilon"]
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(fed.budget()[shown].to_string())
        noisy = fed.count(privacy=DP_COUNT)
        low, high = noisy.ci()
        print(f"\ncount with epsilon {DP_COUNT.epsilon}: {noisy.value:,} (noise std "
              f"{noisy.noise_std:.1f}, 95% interval {low:,.0f} to {high:,.0f}; the exact "
              f"count is {true_total:,}). Every node added a share of discrete Gaussian noise "
              "and charged its ledger before anything left it.")
        print("The budgets after it (each node charged the datasets it holds):")
        print(fed.budget()[shown].to_string())
        print("(budgets are kept in rho, zero-concentrated DP, where spending adds up; stated "
              f"as epsilon at delta {TRIAL_BUDGET.delta:g} they do not simply subtract)")


def _aggregator_view(fed: Federation, protection: str) -> None:
    _section("What the aggregator saw")
    log = fed.local.log("aggregator")
    kind = "MaskedInput" if protection == "mask" else "EncryptedInput"
    seen = [line for line in log.splitlines() if f"{kind} from" in line]
    for line in seen[:6]:
        print("  " + re.sub(r"^\S+ \S+ \S+ \S+ ", "", line))
    if protection == "mask":
        print(f"  ... {len(seen)} masked vectors in all: uniformly random words, which only "
              "sum to the totals once every mask cancels.")
    else:
        print(f"  ... {len(seen)} encrypted vectors in all. The aggregator multiplied them "
              "and forwarded the nodes' partial decryptions, sealed to the researcher: it "
              "never saw a total.")


def _audit(root: Path) -> None:
    _section(f"Auditing {AUDITED_NODE}'s privacy ledger")
    print(f"{AUDITED_NODE} recorded every query, and the DP charge before its answer left, in a "
          "signed hash chain; the client kept the signed ledger head that came with each "
          "answer (keys/alice.receipts). An auditor checks the chain, the arithmetic and "
          "that the ledger extends every receipt, in the federation's folder:")
    # pinned as an auditor pins it: the authority's fingerprint, told out of band
    authority = load_manifest(root / "federation.json").authority_fingerprint
    command = ["audit", "verify", f"{AUDITED_NODE}/ledger.db", "--federation",
               "federation.json", "--authority", authority, "--receipts",
               "keys/alice.receipts"]
    print("$ fedtally " + " ".join(command))
    done = subprocess.run([sys.executable, "-m", "fedtally", *command], cwd=root,
                          capture_output=True, text=True, timeout=120, check=False)
    for line in (done.stdout + done.stderr).strip().splitlines():
        print("  " + line)
    if done.returncode != 0:
        raise FedtallyError(f"the audit of {AUDITED_NODE}'s ledger failed (exit "
                            f"{done.returncode})")
