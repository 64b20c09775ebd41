"""The `fedtally` command. Errors are one readable line and an exit code, never a traceback
(set FEDTALLY_DEBUG=1 to see one)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crypto.errors import CryptoError
from crypto.paillier import DEFAULT_KEY_BITS
from fedtally.version import software_version
from protocol.errors import ConfigurationError, FedtallyError
from protocol.manifest import PROTECTIONS

if TYPE_CHECKING:
    from privacy.head import HeadReceipt

EXIT_FAILURE = 1
EXIT_USAGE = 2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _federation_init(args: argparse.Namespace) -> int:
    from fedtally.federation import init_federation, load_manifest

    path = init_federation(args.directory, _names(args.nodes), _names(args.researchers),
                           auditors=_names(args.auditors or ""),
                           aggregator_host=args.aggregator_host,
                           aggregator_port=args.aggregator_port,
                           threshold_fraction=args.threshold_fraction, force=args.force,
                           protection=args.protection, paillier_bits=args.paillier_bits,
                           decryption_threshold=args.decryption_threshold,
                           max_colluding_nodes=args.max_colluding_nodes,
                           secagg_plus=args.secagg_plus,
                           verifiable_totals=not args.no_verifiable_totals)
    manifest = load_manifest(path)
    print(f"federation written to {path.parent} (manifest: {path.name}); see README.txt there")
    print(f"authority fingerprint: {manifest.authority_fingerprint}")
    print(f"TLS CA fingerprint:    {manifest.tls_ca}")
    print("tell every party both fingerprints through a channel other than this folder")
    return 0


def _membership(args: argparse.Namespace) -> int:
    from fedtally.federation import add_member, remove_member, rotate_key

    if args.action == "add-member":
        manifest = add_member(args.directory, args.name, args.role)
        done = f"added {args.role} {args.name}; its key is keys/{args.name}.key"
    elif args.action == "remove-member":
        manifest = remove_member(args.directory, args.name)
        done = f"removed {args.name}"
    else:
        manifest = rotate_key(args.directory, args.name)
        done = f"new key for {args.name} in keys/{args.name}.key"
    print(f"{done}; federation.json is now version {manifest.version}. Copy it to every "
          "member and restart the aggregator and nodes: members refuse older versions.")
    return 0


def _aggregator_serve(args: argparse.Namespace) -> int:
    from aggregator.service import run_aggregator

    run_aggregator(Path(args.config), port=args.port,
                   ready_file=Path(args.ready_file) if args.ready_file else None,
                   stage_timeout_s=args.stage_timeout, software=software_version())
    return 0


def _node_serve(args: argparse.Namespace) -> int:
    from node.service import run_node

    run_node(args.config, aggregator_url=args.aggregator_url, software=software_version())
    return 0


def _when(now: float, then: float | None) -> str:
    """How long ago, for a table: "never", "4 s ago", "3 min ago", "2.5 h ago"."""
    if then is None:
        return "never"
    ago = max(0.0, now - then)
    if ago < 120:
        return f"{ago:.0f} s ago"
    if ago < 7200:
        return f"{ago / 60:.0f} min ago"
    return f"{ago / 3600:.1f} h ago"


def status_text(status: dict[str, Any]) -> str:
    """`fedtally status` as a table: the aggregator, then one line per node."""
    agg, now = status["aggregator"], status["now"]
    nodes = status["nodes"]
    online = sum(1 for n in nodes if n["online"])
    lines = [f"aggregator: fedtally {agg['software']}, up {_duration(agg['uptime_s'])}; "
             f"{online} of {len(nodes)} nodes online; researchers connected: "
             f"{status['researchers_online']}, auditors: {status['auditors_online']}",
             f"{'node':<24} {'state':<8} {'version':<14} {'connected':<14} "
             f"{'last seen':<14} ping"]
    for node in nodes:
        ping = f"{node['latency_ms']:.1f} ms" if node["latency_ms"] is not None else "-"
        # an offline node is not connected: when it last was is in --json (connected_at)
        connected = _when(now, node["connected_at"]) if node["online"] else "-"
        lines.append(f"{node['name']:<24} {'online' if node['online'] else 'OFFLINE':<8} "
                     f"{node['software'] or '-':<14} {connected:<14} "
                     f"{_when(now, node['last_seen']):<14} {ping}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _status(args: argparse.Namespace) -> int:
    from fedtally.client import connect

    with connect(args.aggregator_url, bundle=args.federation, timeout_s=args.timeout) as fed:
        status = fed.status()
    print(json.dumps(status, indent=2) if args.json else status_text(status))
    return 0 if all(n["online"] for n in status["nodes"]) or not args.fail_offline \
        else EXIT_FAILURE


def _node_check(args: argparse.Namespace) -> int:
    from node.config import check_source_datasets, load_model, load_node_config
    from node.datasource import load_all
    from node.service import sql_store
    from node.validation import REFUSED, ValidationFailed, check, coerce, column_notes

    config = load_node_config(Path(args.config))
    if config.model_path is None:
        raise ConfigurationError("the node configuration names no data_model")
    model = load_model(config.model_path)
    check_source_datasets(config, model)
    try:  # checked where node serve keeps the rows: in SQL, counts only, never all in memory
        store = sql_store(config, model)
    except ValidationFailed as failed:
        lines = [f"{config.me.name}: {failed}", *column_notes(failed.absent, failed.unknown),
                 REFUSED]
        print("\n".join(lines), file=sys.stderr)
        return EXIT_FAILURE
    if store is not None:
        try:
            print(f"{config.me.name}: {store.check_report().text()}")
        finally:
            store.close()
        return 0
    rows = load_all(config.sources)
    report = check(rows, model)  # what node serve refuses, and a summary per variable
    print(f"{config.me.name}: {report.text()}", file=sys.stdout if report.ok else sys.stderr)
    if not report.ok:
        return EXIT_FAILURE
    coerce(rows, model)  # the typing node serve does next
    return 0


def _ledger_keys(paths: list[str], federation: str, authority: str | None
                 ) -> list[tuple[str, Path, bytes]]:
    """(node, ledger, public key) for each ledger, the key taken from the signed manifest
    (signed by the pinned ``authority``, when given): the ledger's own genesis entry only
    says which node to look up."""
    from fedtally.federation import load_manifest
    from privacy.audit import read_ledger_key
    from privacy.errors import PrivacyError
    from protocol.manifest import check_pins

    manifest = load_manifest(federation)
    check_pins(manifest, authority=authority, tls_ca=None, source=federation)
    if authority is None:
        print(f"warning: {federation} was not checked against the federation authority: "
              "whoever could write it could name other node keys; pass --authority "
              f"FINGERPRINT (the authority fingerprint in the federation's README.txt; this "
              f"one is signed by {manifest.authority_fingerprint})", file=sys.stderr)
    by_key = {m.verify_key.raw: name for name, m in manifest.members.items() if m.role == "node"}
    out = []
    for path in paths:
        try:
            claimed = read_ledger_key(Path(path))
        except PrivacyError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
        if claimed not in by_key:
            raise ConfigurationError(
                f"{path} is not the ledger of a node of this federation (its key is not a "
                f"node's in {federation}, version {manifest.version}: use the newest "
                "federation.json, which lists every node's current key)")
        out.append((by_key[claimed], Path(path), claimed))
    return out


def _receipts(path: str | None) -> list[HeadReceipt]:
    """The head receipts in ``path`` (one JSON line each), or none."""
    from privacy.errors import PrivacyError
    from privacy.head import load_receipts

    if path is None:
        return []
    try:
        return load_receipts(path)
    except PrivacyError as exc:
        raise ConfigurationError(str(exc)) from None


def _audit_verify(args: argparse.Namespace) -> int:
    from privacy.audit import cli_verify
    from privacy.errors import InvalidRequest
    from privacy.head import parse_head

    if args.expected_head is not None:
        try:
            parse_head(args.expected_head)
        except InvalidRequest as exc:
            raise ConfigurationError(f"--expected-head: {exc}") from None
    (node, path, key), = _ledger_keys([args.ledger], args.federation, args.authority)
    return cli_verify(path, key, receipts=_receipts(args.receipts),
                      expected_head=args.expected_head)


def _audit_report(args: argparse.Namespace) -> int:
    from privacy.report import cli_report

    if not (args.html or args.json or args.csv):
        raise ConfigurationError("name at least one output: --html, --json or --csv")
    if not 0 < args.delta < 1:
        raise ConfigurationError("--delta must be between 0 and 1, e.g. 1e-6")
    return cli_report(_ledger_keys(args.ledgers, args.federation, args.authority),
                      html=args.html,
                      json=args.json, csv=args.csv, receipts=_receipts(args.receipts),
                      delta=args.delta)


def _demo(args: argparse.Namespace) -> int:
    from fedtally.demo import run_demo

    run_demo(workdir=Path(args.workdir) if args.workdir else None, scale=args.scale,
             protection=args.protection, keep=args.keep)
    return 0


def _logging_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--log-level", default=None, type=str.upper, choices=LOG_LEVELS,
                         help="DEBUG, INFO (default, or $FEDTALLY_LOG), WARNING or ERROR")
    command.add_argument("--log-file", default=None, metavar="FILE",
                         help="append the log to FILE instead of standard error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedtally",
        description="Privacy-preserving secure aggregation for federated analytics.")
    parser.add_argument("--version", action="version",
                        version=f"fedtally {software_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    federation = commands.add_parser("federation", help="set up a federation")
    fed_commands = federation.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = fed_commands.add_parser(
        "init", help="write a signed manifest, member keys, TLS certificates and configs")
    init.add_argument("directory")
    init.add_argument("--nodes", required=True, help="comma-separated node names")
    init.add_argument("--researchers", required=True, help="comma-separated researcher names")
    init.add_argument("--auditors", default="", help="comma-separated auditor names")
    init.add_argument("--aggregator-host", default="127.0.0.1")
    init.add_argument("--aggregator-port", type=int, default=8765)
    init.add_argument("--threshold-fraction", type=float, default=2 / 3,
                      help="share of a round's nodes that must survive (> 0.5)")
    init.add_argument("--protection", choices=PROTECTIONS, default="mask",
                      help="pairwise masks (default) or threshold Paillier encryption")
    init.add_argument("--paillier-bits", type=int, default=DEFAULT_KEY_BITS,
                      help="Paillier modulus size (default %(default)s; at least 2048)")
    init.add_argument("--decryption-threshold", type=int, default=None, metavar="T",
                      help="nodes needed to decrypt in Paillier mode (default: the least "
                           "number above (nodes + C)/2)")
    init.add_argument("--max-colluding-nodes", type=int, default=1, metavar="C",
                      help="nodes that may collude with the aggregator (default %(default)s); "
                           "thresholds follow: t > (n + C)/2 and t - C >= 2")
    init.add_argument("--secagg-plus", action="store_true",
                      help="let large rounds run over the SecAgg+ graph (O(log n) work per "
                           "node; see the threat model)")
    init.add_argument("--no-verifiable-totals", action="store_true",
                      help="mask mode: nodes do not commit to their vectors, so researchers "
                           "cannot check totals (saves ~0.3 ms per value; see the threat model)")
    init.add_argument("--force", action="store_true", help="write into a non-empty directory")
    init.set_defaults(run=_federation_init)
    add = fed_commands.add_parser(
        "add-member", help="add a node, researcher or auditor (re-signs the manifest)")
    add.add_argument("directory", help="the authority's folder (with authority.key)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("node", "researcher", "auditor"))
    remove = fed_commands.add_parser(
        "remove-member", help="remove a member (re-signs the manifest, deletes its key here)")
    remove.add_argument("directory", help="the authority's folder (with authority.key)")
    remove.add_argument("name")
    rotate = fed_commands.add_parser(
        "rotate-key", help="give a member or the aggregator a new key (re-signs the manifest; "
                           "a node also gets keys/NAME.key.previous, which its ledger needs)")
    rotate.add_argument("directory", help="the authority's folder (with authority.key)")
    rotate.add_argument("name", help="a member's name, or 'aggregator'")
    for command in (add, remove, rotate):
        command.set_defaults(run=_membership)

    aggregator = commands.add_parser("aggregator", help="run the aggregator service")
    agg_commands = aggregator.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = agg_commands.add_parser("serve", help="serve nodes and researchers over TLS")
    serve.add_argument("--config", required=True)
    serve.add_argument("--port", type=int, default=None, help="override the port (0: any)")
    serve.add_argument("--stage-timeout", type=float, default=None,
                       help="seconds to wait for nodes in each round stage (default: manifest)")
    serve.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    _logging_options(serve)
    serve.set_defaults(run=_aggregator_serve)

    node = commands.add_parser("node", help="run or check a node")
    node_commands = node.add_subparsers(dest="action", metavar="ACTION", required=True)
    node_serve = node_commands.add_parser("serve", help="connect to the aggregator and answer")
    node_serve.add_argument("--config", required=True)
    node_serve.add_argument("--aggregator-url", default=None, help="override the config's URL")
    _logging_options(node_serve)
    node_serve.set_defaults(run=_node_serve)
    check = node_commands.add_parser("check", help="load and validate the node's data, then exit")
    check.add_argument("--config", required=True)
    check.set_defaults(run=_node_check)

    audit = commands.add_parser("audit", help="verify privacy ledgers and report spending")
    audit_commands = audit.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check a node ledger: chain, signatures, arithmetic, and that it "
                       "extends the heads given (exit 1 and the reason if not)")
    verify.add_argument("ledger")
    verify.add_argument("--federation", required=True, help="the signed federation.json")
    verify.add_argument("--authority", default=None, metavar="FINGERPRINT",
                        help="refuse a manifest signed by any other authority (the SHA-256 "
                             "fingerprint federation init printed)")
    verify.add_argument("--receipts", default=None, metavar="FILE",
                        help="head receipts (one JSON line each) the ledger must extend")
    verify.add_argument("--expected-head", default=None, metavar="SEQ:HEX",
                        help="a head printed by an earlier verification")
    verify.set_defaults(run=_audit_verify)
    report = audit_commands.add_parser(
        "report", help="spending per researcher and dataset, every query, refusals: HTML "
                       "(with plots), JSON, CSV")
    report.add_argument("ledgers", nargs="+")
    report.add_argument("--federation", required=True)
    report.add_argument("--authority", default=None, metavar="FINGERPRINT",
                        help="refuse a manifest signed by any other authority")
    report.add_argument("--html", default=None)
    report.add_argument("--json", default=None)
    report.add_argument("--csv", default=None)
    report.add_argument("--receipts", default=None, metavar="FILE",
                        help="head receipts each ledger must extend")
    report.add_argument("--delta", type=float, default=1e-6,
                        help="the delta at which epsilons are stated (default %(default)s)")
    report.set_defaults(run=_audit_report)

    status = commands.add_parser(
        "status", help="who is online: nodes (version, connected since, last seen, ping) and "
                       "the aggregator's version and uptime")
    status.add_argument("--federation", required=True, metavar="BUNDLE",
                        help="your bundle, researchers/<you>.json (written by federation init)")
    status.add_argument("--aggregator-url", default=None, help="override the bundle's URL")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the aggregator (default %(default)s)")
    status.add_argument("--fail-offline", action="store_true",
                        help="exit 1 when a node of the manifest is offline (for monitoring)")
    status.set_defaults(run=_status)

    demo = commands.add_parser("demo", help="run a three-hospital stroke-registry demo locally")
    demo.add_argument("--workdir", default=None, help="keep the federation's files here")
    demo.add_argument("--keep", action="store_true",
                      help="keep the federation's files (a new temporary folder, printed)")
    demo.add_argument("--scale", type=float, default=1.0, help="patients per hospital factor")
    demo.add_argument("--protection", choices=PROTECTIONS, default="mask",
                      help="pairwise masks (default) or threshold Paillier")
    demo.set_defaults(run=_demo)
    return parser


def _configure_logging(level: str | None, path: str | None) -> None:
    """The log goes to ``path`` (appended) or standard error, at ``level`` (else
    $FEDTALLY_LOG, else INFO)."""
    level = level or os.environ.get("FEDTALLY_LOG", "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigurationError(f"FEDTALLY_LOG={level!r}: use one of {', '.join(LOG_LEVELS)}")
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler()
    else:
        try:
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot write the log file {path}: {exc.strerror}; "
                                     "check the folder exists and is writable") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a reader gone shows here, not as noise at exit
    except BrokenPipeError:
        # whoever read our output stopped (`fedtally node check ... | head -1`): stop too,
        # quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        _configure_logging(getattr(args, "log_level", None), getattr(args, "log_file", None))
        return run(args)
    except KeyboardInterrupt:
        return 130
    except (FedtallyError, CryptoError) as exc:
        if os.environ.get("FEDTALLY_DEBUG"):
            raise
        code = EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_FAILURE
        print(f"fedtally: error: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
