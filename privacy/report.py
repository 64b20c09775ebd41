"""The auditors' report over one or more node ledgers: JSON, CSV, self-contained HTML.

Every ledger is verified first; a ledger that fails is listed with its error and its
entries are left out (a report must never present unverified numbers as facts).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path

from privacy import entry as E
from privacy.audit import verify_ledger_entries
from privacy.errors import LedgerCorrupt, PrivacyError
from privacy.ledger import utc_now
from privacy.svg import Bar, StepSeries, bar_chart, step_chart
from privacy.units import budget_nano, nano_float, nano_text

FORMAT = "fedtally-audit-report-v1"
ANY = "*"
#: node -> researcher -> dataset -> rho (or {"rho": rho}), "*" as in the node policy
Budgets = Mapping[str, Mapping[str, Mapping[str, object]]]


@dataclass(frozen=True)
class NodeStatus:
    node: str
    path: str
    public_key: str
    valid: bool
    error: str = ""
    entries: int = 0
    head_seq: int = -1
    head_hash: str = ""


@dataclass(frozen=True)
class BudgetRow:
    node: str
    researcher: str
    dataset: str
    spent_nano: int
    limit_nano: int | None
    charges: int
    refunds: int
    refusals: int

    @property
    def remaining_nano(self) -> int | None:
        return None if self.limit_nano is None else max(self.limit_nano - self.spent_nano, 0)


@dataclass(frozen=True)
class RefusalRow:
    node: str
    seq: int
    time: str
    query_id: str
    researcher: str
    dataset: str
    method: str
    rho_nano: int
    reason: str


@dataclass(frozen=True)
class SpendPoint:
    seq: int
    time: str
    spent_nano: int  # cumulative, net of refunds


@dataclass
class Report:
    generated: str
    nodes: list[NodeStatus] = field(default_factory=list)
    budgets: list[BudgetRow] = field(default_factory=list)
    refusals: list[RefusalRow] = field(default_factory=list)
    spending: dict[tuple[str, str, str], list[SpendPoint]] = field(default_factory=dict)
    entries: list[tuple[str, E.Entry]] = field(default_factory=list)

    # --- machines ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        def amounts(prefix: str, nano: int | None) -> dict[str, object]:
            return {f"{prefix}_nano": nano,
                    f"{prefix}_rho": None if nano is None else nano_text(nano)}

        return {
            "format": FORMAT,
            "generated": self.generated,
            "units": "rho amounts are exact decimal strings; *_nano are integers (1e-9 rho)",
            "ledgers": [asdict(n) for n in self.nodes],
            "budgets": [
                {"node": b.node, "researcher": b.researcher, "dataset": b.dataset,
                 **amounts("spent", b.spent_nano), **amounts("limit", b.limit_nano),
                 **amounts("remaining", b.remaining_nano), "charges": b.charges,
                 "refunds": b.refunds, "refusals": b.refusals}
                for b in self.budgets
            ],
            "spending": [
                {"node": node, "researcher": who, "dataset": what,
                 "points": [{"seq": p.seq, "time": p.time, **amounts("spent", p.spent_nano)}
                            for p in points]}
                for (node, who, what), points in sorted(self.spending.items())
            ],
            "refusals": [{**asdict(r), "rho": nano_text(r.rho_nano)} for r in self.refusals],
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
        parts = [_HEAD.format(generated=escape(self.generated)), _verification(self.nodes)]
        parts.append('<section id="spending"><h2>Spending over time</h2>'
                     "<p>Cumulative rho charged (net of refunds) per researcher and dataset; "
                     "dashed lines are the budgets.</p>")
        nodes = [n for n in self.nodes if n.valid]
        for node in nodes:
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
        parts.append('<section id="budgets"><h2>Remaining budgets</h2>')
        if self.budgets:
            parts.append(bar_chart(
                [Bar(f"{b.node}: {b.researcher} / {b.dataset}", nano_float(b.spent_nano),
                     None if b.limit_nano is None else nano_float(b.limit_nano),
                     _budget_text(b)) for b in self.budgets],
                title="Spent (dark) of each budget (pale)", css_class="chart-budgets"))
            parts.append(_budget_table(self.budgets))
        else:
            parts.append("<p>No budgets in use.</p>")
        parts.append("</section>")
        parts.append(_refusal_table(self.refusals))
        parts.append(_FOOT)
        return "".join(parts)


def build_report(ledgers: Sequence[tuple[str, str | Path, bytes]],
                 budgets: Budgets | None = None, *, generated: str | None = None) -> Report:
    """Verify each ``(node name, ledger path, node public key)`` and summarise them.

    ``budgets`` (node -> researcher -> dataset -> rho, with ``"*"`` as in the node policy)
    gives the current limits; without it the limit recorded with the latest charge or
    refusal is used.
    """
    report = Report(generated=generated or utc_now())
    for node, path, public_key in ledgers:
        try:
            summary, entries = verify_ledger_entries(path, public_key)
        except (LedgerCorrupt, ValueError) as exc:
            report.nodes.append(NodeStatus(node, str(path), _hex(public_key), False, str(exc)))
            continue
        report.nodes.append(NodeStatus(node, str(path), summary.public_key, True, "",
                                       summary.entries, summary.head_seq, summary.head_hash))
        _add_ledger(report, node, entries, (budgets or {}).get(node) if budgets else None)
    return report


def _add_ledger(report: Report, node: str, entries: list[E.Entry],
                budgets: Mapping[str, Mapping[str, object]] | None) -> None:
    spent: dict[tuple[str, str], int] = {}
    recorded: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    changes: dict[tuple[str, str], list[tuple[float, int, str, int]]] = {}
    for e in entries:
        report.entries.append((node, e))
        if e.kind == E.GENESIS:
            continue
        key = (e.researcher, e.dataset)
        tally = counts.setdefault(key, [0, 0, 0])
        if e.kind in (E.CHARGE, E.REFUSAL) and e.budget_nano >= 0:
            recorded[key] = e.budget_nano
        if e.kind == E.REFUSAL:
            tally[2] += 1
            report.refusals.append(RefusalRow(node, e.seq, e.time, e.query_id, e.researcher,
                                              e.dataset, e.method, e.rho_nano, e.reason))
        elif e.kind in (E.CHARGE, E.REFUND):
            sign = 1 if e.kind == E.CHARGE else -1
            tally[0 if sign > 0 else 1] += 1
            spent[key] = spent.get(key, 0) + sign * e.rho_nano
            changes.setdefault(key, []).append((_seconds(e.time), e.seq, e.time,
                                                sign * e.rho_nano))
    for key, steps in changes.items():
        # "over time" means in time order; the clock is the node's, so a step backwards
        # (e.g. an NTP correction) must not draw the line backwards
        total, points = 0, []
        for _, seq, time, delta in sorted(steps):
            total += delta
            points.append(SpendPoint(seq, time, total))
        report.spending[(node, *key)] = points
    for key in sorted(counts):
        limit = recorded.get(key)
        if budgets is not None:
            limit = _lookup(budgets, *key)
        report.budgets.append(BudgetRow(node, *key, spent.get(key, 0), limit, *counts[key]))


def _lookup(budgets: Mapping[str, Mapping[str, object]], researcher: str,
            dataset: str) -> int | None:
    """The node policy's rule: the researcher's own entry (else ``"*"``), then the dataset's
    own budget (else ``"*"``) within it."""
    for who in (researcher, ANY):
        per_dataset = budgets.get(who)
        if per_dataset is None:
            continue
        for what in (dataset, ANY):
            if what in per_dataset:
                value = per_dataset[what]
                if isinstance(value, Mapping):
                    value = value.get("rho")
                try:
                    return budget_nano(value)  # type: ignore[arg-type]
                except PrivacyError:
                    return None
        return None
    return None


def _limit_of(rows: list[BudgetRow], node: str, who: str, what: str) -> float | None:
    for b in rows:
        if (b.node, b.researcher, b.dataset) == (node, who, what) and b.limit_nano is not None:
            return nano_float(b.limit_nano)
    return None


def _seconds(time: str) -> float:
    return datetime.fromisoformat(time).timestamp()


def _hex(key: object) -> str:
    return key.hex() if isinstance(key, bytes) else ""


def _budget_text(b: BudgetRow) -> str:
    if b.limit_nano is None:
        return f"spent {nano_text(b.spent_nano)} (no known limit)"
    return (f"spent {nano_text(b.spent_nano)} of {nano_text(b.limit_nano)}, "
            f"{nano_text(b.remaining_nano or 0)} left")


def _verification(nodes: list[NodeStatus]) -> str:
    rows = "".join(
        f'<tr class="{"ok" if n.valid else "bad"}"><td>{escape(n.node)}</td>'
        f"<td>{escape(n.path)}</td><td><code>{escape(n.public_key[:16])}</code></td>"
        f"<td>{'valid' if n.valid else 'INVALID'}</td><td>{n.entries if n.valid else ''}</td>"
        f"<td><code>{escape(n.head_hash[:16])}</code></td><td>{escape(n.error)}</td></tr>"
        for n in nodes
    )
    return ('<section id="verification"><h2>Ledger verification</h2>'
            '<table class="verification"><thead><tr><th>node</th><th>ledger</th>'
            "<th>node key</th><th>status</th><th>entries</th><th>head</th><th>error</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></section>")


def _budget_table(rows: list[BudgetRow]) -> str:
    body = "".join(
        f"<tr><td>{escape(b.node)}</td><td>{escape(b.researcher)}</td>"
        f"<td>{escape(b.dataset)}</td><td>{nano_text(b.spent_nano)}</td>"
        f"<td>{'' if b.limit_nano is None else nano_text(b.limit_nano)}</td>"
        f"<td>{'' if b.remaining_nano is None else nano_text(b.remaining_nano)}</td>"
        f"<td>{b.charges}</td><td>{b.refunds}</td><td>{b.refusals}</td></tr>"
        for b in rows
    )
    return ('<table class="budgets"><thead><tr><th>node</th><th>researcher</th>'
            "<th>dataset</th><th>spent rho</th><th>budget rho</th><th>remaining rho</th>"
            "<th>charges</th><th>refunds</th><th>refusals</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _refusal_table(rows: list[RefusalRow]) -> str:
    if not rows:
        return ('<section id="refusals"><h2>Refused queries</h2>'
                "<p>No refused queries.</p></section>")
    body = "".join(
        f"<tr><td>{escape(r.node)}</td><td>{escape(r.time)}</td>"
        f"<td><code>{escape(r.query_id[:16])}</code></td><td>{escape(r.researcher)}</td>"
        f"<td>{escape(r.dataset)}</td><td>{escape(r.method)}</td>"
        f"<td>{nano_text(r.rho_nano)}</td><td>{escape(r.reason)}</td></tr>"
        for r in rows
    )
    return ('<section id="refusals"><h2>Refused queries</h2><table class="refusals"><thead>'
            "<tr><th>node</th><th>time</th><th>query</th><th>researcher</th><th>dataset</th>"
            "<th>method</th><th>rho requested</th><th>reason</th></tr></thead>"
            f"<tbody>{body}</tbody></table></section>")


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fedtally privacy audit report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
tr.bad td {{ background: #fde2e2; }} tr.ok td:nth-child(4) {{ color: #1a7f37; }}
svg.chart {{ display: block; margin: 1em 0; background: #fff; }}
svg .grid {{ stroke: #eee; }} svg .axis {{ stroke: #555; }}
svg text {{ font-size: 11px; fill: #333; }} svg .chart-title {{ font-size: 13px; }}
</style></head><body>
<h1>fedtally privacy audit report</h1>
<p>Generated {generated}. Every ledger below was verified (hash chain, Ed25519 signatures
against the node key, signed head, budget arithmetic) before any of its numbers were used.
Amounts are zero-concentrated DP rho.</p>
"""

_FOOT = """<section id="reading"><h2>How to read this report</h2>
<p>A charge is written and made durable before a node lets anything leave; a release marks
the moment a contribution was sent; a refund returns a charge only when provably nothing was
sent. Refused queries were rejected by the node, with the reason code shown.</p></section>
</body></html>
"""
