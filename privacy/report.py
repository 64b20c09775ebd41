"""The auditors' report over one or more node ledgers: JSON, CSV, self-contained HTML.

Every ledger is verified first (with the head receipts given); a ledger that fails is
listed with its error and its entries are left out (a report must never present unverified
numbers as facts). Budgets are those of each ledger's policy in force at its end; epsilon is
stated at one chosen delta (zCDP rho composes by addition, so the epsilon of what was spent
is computed from the summed rho, never by adding epsilons).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TextIO

from privacy import entry as E
from privacy import fields as F
from privacy.accounting import epsilon_from_rho
from privacy.audit import verify_ledger_entries
from privacy.charts import Bar, StepSeries, bar_chart, step_chart
from privacy.errors import InvalidRequest, LedgerCorrupt
from privacy.head import HeadReceipt
from privacy.ledger import utc_now
from privacy.mechanism import check_delta
from privacy.policy_terms import PolicyTerms
from privacy.units import NANO_PER_RHO, nano_float, nano_text

FORMAT = "fedtally-audit-report-v2"
DEFAULT_DELTA = 1e-6


@dataclass(frozen=True)
class NodeStatus:
    node: str
    path: str
    public_key: str
    valid: bool
    error: str = ""
    entries: int = 0
    head: str = ""  # SEQ:HEX of the signed head
    receipts_checked: int = 0
    latest_receipt: str = ""  # SEQ:HEX of the newest receipt checked
    policy_digest: str = ""


@dataclass(frozen=True)
class BudgetRow:
    node: str
    researcher: str
    dataset: str
    spent_nano: int
    limit_nano: int | None  # of the policy in force at the ledger's end; None: none granted
    charges: int
    refunds: int
    refusals: int

    @property
    def remaining_nano(self) -> int | None:
        return None if self.limit_nano is None else max(self.limit_nano - self.spent_nano, 0)


@dataclass(frozen=True)
class QueryRow:
    node: str
    seq: int
    time: str
    query_id: str
    researcher: str
    method: str
    datasets: tuple[str, ...]
    mode: str  # "exact", "DP", or "" (refused before any calibration)
    decision: str
    reason: str
    rho_nano: int
    epsilon: str
    delta: str
    outcome: str  # answered / released / refunded / charged, not released / refused


@dataclass(frozen=True)
class PolicyRow:
    node: str
    seq: int
    time: str
    digest: str
    policy_json: str


@dataclass(frozen=True)
class KeyRotationRow:
    """A key_rotation entry: signed by ``old_key``, from it on the ledger is under
    ``new_key``, which manifest version ``manifest`` lists."""

    node: str
    seq: int
    time: str
    old_key: str
    new_key: str
    manifest: str  # e.g. "manifest-v3"


@dataclass(frozen=True)
class SpendPoint:
    seq: int
    time: str
    spent_nano: int  # cumulative, net of refunds


@dataclass
class Report:
    generated: str
    delta: float = DEFAULT_DELTA
    nodes: list[NodeStatus] = field(default_factory=list)
    budgets: list[BudgetRow] = field(default_factory=list)
    queries: list[QueryRow] = field(default_factory=list)
    policies: list[PolicyRow] = field(default_factory=list)
    rotations: list[KeyRotationRow] = field(default_factory=list)
    spending: dict[tuple[str, str, str], list[SpendPoint]] = field(default_factory=dict)
    entries: list[tuple[str, E.Entry]] = field(default_factory=list)

    @property
    def refusals(self) -> list[QueryRow]:
        return [q for q in self.queries if q.decision == E.REFUSED]

    def epsilon(self, nano: int | None) -> str | None:
        """The epsilon that ``nano`` rho implies at the report's delta, as text."""
        if nano is None:
            return None
        return "0" if nano <= 0 else f"{epsilon_from_rho(nano / NANO_PER_RHO, self.delta):.6g}"

    # --- machines ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        def amounts(prefix: str, nano: int | None) -> dict[str, object]:
            return {f"{prefix}_nano": nano,
                    f"{prefix}_rho": None if nano is None else nano_text(nano),
                    f"{prefix}_epsilon": self.epsilon(nano)}

        return {
            "format": FORMAT,
            "generated": self.generated,
            "delta": self.delta,
            "units": "rho amounts are exact decimal strings; *_nano are integers (1e-9 rho); "
                     "*_epsilon is the epsilon of that rho alone at the report's delta",
            "ledgers": [asdict(n) for n in self.nodes],
            "policies": [asdict(p) for p in self.policies],
            "key_rotations": [asdict(r) for r in self.rotations],
            "budgets": [
                {"node": b.node, "researcher": b.researcher, "dataset": b.dataset,
                 **amounts("spent", b.spent_nano), **amounts("limit", b.limit_nano),
                 **amounts("remaining", b.remaining_nano), "charges": b.charges,
                 "refunds": b.refunds, "refusals": b.refusals}
                for b in self.budgets
            ],
            "queries": [{**asdict(q), "datasets": list(q.datasets), "rho": nano_text(q.rho_nano)}
                        for q in self.queries],
            "spending": [
                {"node": node, "researcher": who, "dataset": what,
                 "points": [{"seq": p.seq, "time": p.time, **amounts("spent", p.spent_nano)}
                            for p in points]}
                for (node, who, what), points in sorted(self.spending.items())
            ],
            "refusals": [{"node": q.node, "seq": q.seq, "time": q.time,
                          "query_id": q.query_id, "researcher": q.researcher,
                          "method": q.method, "datasets": list(q.datasets),
                          "reason": q.reason, "rho": nano_text(q.rho_nano)}
                         for q in self.refusals],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def to_csv(self) -> str:
        """Every verified entry, one row each, with the node's name and rho as decimal text."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["node", *E.FIELDS, "rho"])
        for node, e in self.entries:
            writer.writerow([node, *(getattr(e, f) for f in E.FIELDS), nano_text(e.rho_nano)])
        return buf.getvalue()

    # --- people --------------------------------------------------------------------------

    def to_html(self) -> str:
        """One self-contained page: inline CSS and SVG, no scripts, no external resources."""
        parts = [_HEAD.format(generated=escape(self.generated), delta=_g(self.delta)),
                 _verification(self.nodes)]
        parts.append('<section id="budgets"><h2>Budgets: spent and remaining</h2>'
                     f"<p>Per researcher and dataset, against the budget of each node's policy "
                     f"in force. Epsilons are at delta = {_g(self.delta)}, each computed from "
                     "its rho (epsilons do not add up; rhos do).</p>")
        if self.budgets:
            parts.append(bar_chart(
                [Bar(f"{b.node}: {b.researcher} / {b.dataset}", nano_float(b.spent_nano),
                     None if b.limit_nano is None else nano_float(b.limit_nano),
                     self._budget_text(b)) for b in self.budgets],
                title="Spent (dark) of each budget (pale)", css_class="chart-budgets"))
            parts.append(self._budget_table())
        else:
            parts.append("<p>No budgets in use.</p>")
        parts.append("</section>")
        parts.append('<section id="spending"><h2>Spending over time</h2>'
                     "<p>Cumulative rho charged (net of refunds) per researcher and dataset; "
                     "dashed lines are the budgets.</p>")
        for node in (n for n in self.nodes if n.valid):
            series = [
                StepSeries(
                    label=f"{who} / {what}",
                    points=tuple((_seconds(p.time), nano_float(p.spent_nano)) for p in points),
                    limit=_limit_of(self.budgets, node.node, who, what),
                    attrs=(("node", node.node), ("researcher", who), ("dataset", what)),
                )
                for (n, who, what), points in sorted(self.spending.items()) if n == node.node
            ]
            if series:
                parts.append(step_chart(series, title=f"Node {node.node}",
                                        css_class="chart-spending", attrs={"node": node.node}))
            else:
                parts.append(f"<p>Node {escape(node.node)}: no charges.</p>")
        parts.append("</section>")
        parts.append(_query_table(self.queries))
        parts.append(_refusal_table(self.refusals))
        parts.append(_policy_table(self.policies))
        if self.rotations:
            parts.append(_rotation_table(self.rotations))
        parts.append(_FOOT)
        return "".join(parts)

    def _budget_text(self, b: BudgetRow) -> str:
        spent = f"spent rho {nano_text(b.spent_nano)} (eps {self.epsilon(b.spent_nano)})"
        if b.limit_nano is None:
            return f"{spent}, no budget granted"
        return (f"{spent} of {nano_text(b.limit_nano)} (eps {self.epsilon(b.limit_nano)}), "
                f"{nano_text(b.remaining_nano or 0)} left")

    def _budget_table(self) -> str:
        body = "".join(
            f"<tr><td>{escape(b.node)}</td><td>{escape(b.researcher)}</td>"
            f"<td>{escape(b.dataset)}</td><td>{nano_text(b.spent_nano)}</td>"
            f"<td>{_opt(b.limit_nano)}</td><td>{_opt(b.remaining_nano)}</td>"
            f"<td>{self.epsilon(b.spent_nano)}</td><td>{self.epsilon(b.limit_nano) or ''}</td>"
            f"<td>{self.epsilon(b.remaining_nano) or ''}</td>"
            f"<td>{b.charges}</td><td>{b.refunds}</td><td>{b.refusals}</td></tr>"
            for b in self.budgets
        )
        return ('<table class="budgets"><thead><tr><th>node</th><th>researcher</th>'
                "<th>dataset</th><th>spent rho</th><th>budget rho</th><th>remaining rho</th>"
                "<th>spent eps</th><th>budget eps</th><th>remaining eps</th>"
                "<th>charges</th><th>refunds</th><th>refused queries</th></tr></thead>"
                f"<tbody>{body}</tbody></table>")


def build_report(ledgers: Sequence[tuple[str, str | Path, bytes]], *,
                 receipts: Sequence[HeadReceipt] = (), delta: float = DEFAULT_DELTA,
                 generated: str | None = None) -> Report:
    """Verify each ``(node name, ledger path, node public key)`` against the ``receipts``
    (each applies to the ledger of its node key) and summarise them at ``delta``."""
    try:
        delta = check_delta(delta)
    except InvalidRequest as exc:
        raise InvalidRequest(f"the report's delta must be in (0, 1): {exc}") from exc
    report = Report(generated=generated or utc_now(), delta=delta)
    for node, path, public_key in ledgers:
        try:
            summary, entries = verify_ledger_entries(path, public_key, receipts=receipts)
        except (LedgerCorrupt, ValueError) as exc:
            report.nodes.append(NodeStatus(node, str(path), _hex(public_key), False,
                                           f"{type(exc).__name__}: {exc}"))
            continue
        mine = [r for r in receipts if r.node_key == public_key]
        latest = max(mine, key=lambda r: r.seq).text if mine else ""
        report.nodes.append(NodeStatus(node, str(path), summary.public_key, True, "",
                                       summary.entries, summary.head.text,
                                       summary.receipts_checked, latest,
                                       summary.policy_digest))
        _add_ledger(report, node, entries)
    return report


def _add_ledger(report: Report, node: str, entries: list[E.Entry]) -> None:
    spent: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    changes: dict[tuple[str, str], list[tuple[float, int, str, int]]] = {}
    follow_ups: dict[str, set[str]] = {}  # query id -> kinds of release/refund
    charged: set[str] = set()
    policy: PolicyTerms | None = None
    ledger_key = ""
    for e in entries:
        report.entries.append((node, e))
        if e.kind == E.GENESIS:
            ledger_key = e.node_key
        elif e.kind == E.KEY_ROTATION:
            report.rotations.append(KeyRotationRow(node, e.seq, e.time, ledger_key,
                                                   e.node_key, e.reason))
            ledger_key = e.node_key
        elif e.kind == E.POLICY:
            policy = PolicyTerms.from_text(e.policy_json)  # verified: it parses
            report.policies.append(PolicyRow(node, e.seq, e.time, e.policy_digest,
                                             e.policy_json))
        elif e.kind == E.QUERY and e.decision == E.REFUSED:
            held = [str(d) for d in _json_list(e.held)]
            for dataset in (held if policy is None else policy.accounts(held)):
                counts.setdefault((e.researcher, dataset), [0, 0, 0])[2] += 1
        elif e.kind in (E.CHARGE, E.REFUND):
            key = (e.researcher, e.dataset)
            sign = 1 if e.kind == E.CHARGE else -1
            counts.setdefault(key, [0, 0, 0])[0 if sign > 0 else 1] += 1
            spent[key] = spent.get(key, 0) + sign * e.rho_nano
            changes.setdefault(key, []).append((_seconds(e.time), e.seq, e.time,
                                                sign * e.rho_nano))
            if e.kind == E.CHARGE:
                charged.add(e.query_id)
        if e.kind in (E.RELEASE, E.REFUND):
            follow_ups.setdefault(e.query_id, set()).add(e.kind)
    for e in entries:
        if e.kind == E.QUERY:
            report.queries.append(QueryRow(
                node, e.seq, e.time, e.query_id, e.researcher, e.method,
                tuple(_json_list(e.datasets)), _mode(e), e.decision, e.reason,
                e.rho_nano, e.epsilon, e.delta,
                _outcome(e, follow_ups.get(e.query_id, set()), e.query_id in charged)))
    for key, steps in changes.items():
        # "over time" means in time order (verification checked the clock never went back)
        total, points = 0, []
        for _, seq, time, change in sorted(steps):
            total += change
            points.append(SpendPoint(seq, time, total))
        report.spending[(node, *key)] = points
    for key in sorted(counts):
        limit = None if policy is None else policy.budget_nano(*key)
        report.budgets.append(BudgetRow(node, *key, spent.get(key, 0), limit, *counts[key]))


def _mode(e: E.Entry) -> str:
    """DP when a mechanism is recorded; exact for exact answers; "" for a refusal that came
    before the node calibrated anything."""
    return "DP" if e.mechanism else "exact" if e.decision == E.ANSWERED_EXACT else ""


def _outcome(e: E.Entry, follow_ups: set[str], charged: bool) -> str:
    if e.decision == E.REFUSED:
        return "refused"
    if e.decision == E.ANSWERED_EXACT:
        return "answered"
    if E.RELEASE in follow_ups:
        return "released"
    if E.REFUND in follow_ups:
        return "refunded"
    return "charged, not released" if charged else "nothing charged here"


def _json_list(text: str) -> list[str]:
    value = F.json_value(text, "a list")
    return [str(d) for d in value] if isinstance(value, list) else []


def _limit_of(rows: list[BudgetRow], node: str, who: str, what: str) -> float | None:
    for b in rows:
        if (b.node, b.researcher, b.dataset) == (node, who, what) and b.limit_nano is not None:
            return nano_float(b.limit_nano)
    return None


def _seconds(time: str) -> float:
    return datetime.fromisoformat(time).timestamp()


def _hex(key: object) -> str:
    return key.hex() if isinstance(key, bytes) else ""


def _g(value: float) -> str:
    return f"{value:g}"


def _time(text: str) -> str:
    """A time that may wrap between date and clock."""
    return escape(text).replace("T", "T<wbr>", 1)


def _short(decimal: str) -> str:
    """A recorded decimal to 6 significant digits for the page (JSON/CSV keep it whole)."""
    return f"{float(decimal):.6g}" if decimal else ""


def _opt(nano: int | None) -> str:
    return "" if nano is None else nano_text(nano)


def _verification(nodes: list[NodeStatus]) -> str:
    rows = "".join(
        f'<tr class="{"ok" if n.valid else "bad"}"><td>{escape(n.node)}</td>'
        f'<td class="path">{escape(n.path)}</td><td><code>{escape(n.public_key)}</code></td>'
        f"<td>{'valid' if n.valid else 'INVALID'}</td><td>{n.entries if n.valid else ''}</td>"
        f"<td><code>{escape(n.head)}</code></td><td>{n.receipts_checked if n.valid else ''}"
        f"</td><td><code>{escape(n.latest_receipt)}</code></td>"
        f"<td>{escape(n.error)}</td></tr>"
        for n in nodes
    )
    return ('<section id="verification"><h2>Ledger verification</h2>'
            "<p>Each ledger: hash chain, Ed25519 signatures against the node key, signed "
            "head, the arithmetic of every entry, and that it extends every head receipt "
            "given for its node (a truncated or rolled-back ledger fails). Keep the head "
            "(SEQ:HEX) to check later that the ledger only grew.</p>"
            '<table class="verification"><thead><tr><th>node</th><th>ledger</th>'
            "<th>node key</th><th>status</th><th>entries</th><th>signed head</th>"
            "<th>receipts checked</th><th>newest receipt</th><th>error</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></section>")


def _query_table(rows: list[QueryRow]) -> str:
    if not rows:
        return '<section id="queries"><h2>Queries</h2><p>No queries.</p></section>'
    body = "".join(
        f'<tr class="{escape(q.decision)}"><td>{_time(q.time)}</td><td>{escape(q.node)}</td>'
        f"<td>{escape(q.researcher)}</td><td>{escape(q.method)}</td>"
        f"<td>{escape(', '.join(q.datasets))}</td><td>{q.mode}</td>"
        f"<td>{escape(q.decision)}{': ' + escape(q.reason) if q.reason else ''}</td>"
        f"<td>{nano_text(q.rho_nano) if q.rho_nano else ''}</td>"
        f"<td>{_short(q.epsilon)}{' at ' + escape(q.delta) if q.delta else ''}</td>"
        f"<td>{escape(q.outcome)}</td>"
        f"<td><code>{escape(q.query_id)}</code></td></tr>"
        for q in rows
    )
    return ('<section id="queries"><h2>Queries</h2><p>Every query each node received, '
            "answered or not.</p><table class=\"queries\"><thead><tr><th>time</th>"
            "<th>node</th><th>researcher</th><th>method</th><th>datasets</th>"
            "<th>exact/DP</th><th>decision</th><th>rho</th><th>eps at delta</th>"
            f"<th>outcome</th><th>query</th></tr></thead><tbody>{body}</tbody></table></section>")


def _refusal_table(rows: list[QueryRow]) -> str:
    if not rows:
        return ('<section id="refusals"><h2>Refused queries</h2>'
                "<p>No refused queries.</p></section>")
    body = "".join(
        f"<tr><td>{escape(r.node)}</td><td>{_time(r.time)}</td>"
        f"<td>{escape(r.researcher)}</td><td>{escape(', '.join(r.datasets))}</td>"
        f"<td>{escape(r.method)}</td><td>{nano_text(r.rho_nano) if r.rho_nano else ''}</td>"
        f"<td>{escape(r.reason)}</td><td><code>{escape(r.query_id)}</code></td></tr>"
        for r in rows
    )
    return ('<section id="refusals"><h2>Refused queries</h2><table class="refusals"><thead>'
            "<tr><th>node</th><th>time</th><th>researcher</th><th>datasets</th>"
            "<th>method</th><th>rho requested</th><th>reason</th><th>query</th></tr></thead>"
            f"<tbody>{body}</tbody></table></section>")


def _policy_table(rows: list[PolicyRow]) -> str:
    body = "".join(
        f"<tr><td>{escape(p.node)}</td><td>{p.seq}</td><td>{_time(p.time)}</td>"
        f"<td><code>{escape(p.digest)}</code></td><td><details><summary>policy</summary>"
        f"<pre>{escape(p.policy_json)}</pre></details></td></tr>"
        for p in rows
    )
    return ('<section id="policies"><h2>Policies</h2><p>Each policy a node recorded; '
            "budgets are checked against the one in force when charged.</p>"
            '<table class="policies"><thead><tr><th>node</th><th>entry</th><th>since</th>'
            f"<th>digest</th><th>terms</th></tr></thead><tbody>{body}</tbody></table></section>")


def _rotation_table(rows: list[KeyRotationRow]) -> str:
    body = "".join(
        f"<tr><td>{escape(r.node)}</td><td>{r.seq}</td><td>{_time(r.time)}</td>"
        f"<td><code>{escape(r.old_key)}</code></td><td><code>{escape(r.new_key)}</code></td>"
        f"<td>{escape(r.manifest)}</td></tr>"
        for r in rows
    )
    return ('<section id="key-rotations"><h2>Key rotations</h2><p>Each change of a node\'s '
            "key: the entry is signed by the old key, everything after it by the new one; "
            "spending carries over.</p>"
            '<table class="key-rotations"><thead><tr><th>node</th><th>entry</th><th>time</th>'
            "<th>old key</th><th>new key</th><th>listed by</th></tr></thead>"
            f"<tbody>{body}</tbody></table></section>")


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fedtally privacy audit report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }}
code, .path {{ word-break: break-all; overflow-wrap: anywhere; }}
code {{ font-size: 0.9em; }}
pre {{ white-space: pre-wrap; word-break: break-all; max-width: 40em; }}
tr.bad td, tr.refused td {{ background: #fde2e2; }} tr.ok td:nth-child(4) {{ color: #1a7f37; }}
figure.chart-figure {{ margin: 1em 0; }}
.chart-title {{ font-size: 0.95em; font-weight: 600; margin-bottom: 0.3em; }}
svg.chart {{ display: block; background: #fff; max-width: 100%; height: auto; }}
svg .grid {{ stroke: #eee; }} svg .axis {{ stroke: #555; }}
svg text {{ font-size: 11px; fill: #333; font-family: system-ui, sans-serif; }}
ul.chart-legend {{ list-style: none; padding: 0; margin: 0.3em 0;
                   display: flex; flex-wrap: wrap; gap: 0.3em 1.2em; font-size: 0.9em; }}
.swatch {{ display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; }}
.bars {{ display: grid; grid-template-columns: fit-content(35%) minmax(8em, 1fr)
         fit-content(45%); gap: 0.35em 0.8em; align-items: center; font-size: 0.9em; }}
.bar-label {{ text-align: right; overflow-wrap: anywhere; }}
.bar-value {{ overflow-wrap: anywhere; }}
.bar-track {{ position: relative; height: 16px; }}
.bar-total, .bar-spent {{ position: absolute; left: 0; top: 0; height: 16px; }}
.bar-total {{ background: #e6eef7; }} .bar-spent {{ background: #4e79a7; }}
</style></head><body>
<h1>fedtally privacy audit report</h1>
<p>Generated {generated}. Every ledger below was verified (hash chain, Ed25519 signatures
against the node key, signed head, head receipts, the arithmetic of every entry) before any
of its numbers were used. Amounts are zero-concentrated DP rho; epsilons are at delta =
{delta}.</p>
"""

_FOOT = """<section id="reading"><h2>How to read this report</h2>
<p>Every query a node received is a ledger entry with its decision. A DP answer's charge is
written and made durable before a node lets anything leave; a release marks the moment a
contribution was sent; a refund returns a charge only when provably nothing was sent. The
ledger computes each epsilon from the rho it charged, and the verification recomputed them,
and the rho the recorded noise gives.</p></section>
</body></html>
"""


# --- the CLI (``fedtally audit report`` calls this; it prints and returns the exit code) --


def cli_report(ledgers: list[tuple[str, str | Path, bytes]], *,
               html: str | Path | None = None, json: str | Path | None = None,
               csv: str | Path | None = None, receipts: Iterable[HeadReceipt] = (),
               delta: float | None = None, out: TextIO | None = None,
               err: TextIO | None = None) -> int:
    """``fedtally audit report``: writes the files; 1 if any ledger failed verification
    (the report still shows it, with its error, and leaves its entries out)."""
    out, err = out or sys.stdout, err or sys.stderr
    report = build_report(ledgers, receipts=list(receipts),
                          delta=DEFAULT_DELTA if delta is None else delta)
    for path, text in ((html, report.to_html), (json, report.to_json), (csv, report.to_csv)):
        if path is not None:
            Path(path).write_text(text(), encoding="utf-8")
    for node in report.nodes:
        if node.valid:
            print(f"{node.node}: valid, {node.entries} entries, {node.receipts_checked} "
                  f"receipts checked, head {node.head}", file=out)
        else:
            print(f"{node.node}: INVALID: {node.error}", file=err)
    return 0 if all(node.valid for node in report.nodes) else 1
