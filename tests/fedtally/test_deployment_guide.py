"""The README's "Deploying a real federation on several machines", followed step by step.

The commands, the node.json snippet, the policy and the researcher's script are read from
the README itself, so the guide cannot drift from what is tested. Each machine is a folder
of its own (the authority's, the aggregator's, three hospitals', a researcher's) that
receives only what the text says to carry there: its archive, and at a hospital its rows,
the data model and its policy. Once packed, the authority's folder is moved away, so a
machine that still reached into it would fail.

Where unprivileged user and network namespaces are available (no root needed), each machine
also runs in a network namespace of its own, wired to a private bridge: the aggregator
listens on "0.0.0.0" port 8765 as the guide says, its address stands for
``aggregator.example.org``, each machine's 127.0.0.1 is its own, and the authority's
machine has no network at all. Elsewhere (or with FEDTALLY_TEST_NO_NETNS=1) the machines
share this host's loopback: 127.0.0.1 stands for ``aggregator.example.org`` and a free port
for 8765. Either way real processes talk TLS websockets, and each hospital's folder stands
for ``/data``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedtally.synthetic import stroke_model, three_hospitals

ROOT = Path(__file__).resolve().parents[2]
TITLE = "## Deploying a real federation on several machines"
NODES = ("hosp_a", "hosp_b", "hosp_c")
MACHINES = ("aggregator", *NODES, "alice")
TIMEOUT_S = 60
ROTATED = "hosp_a"  # whose key step 6 rotates: a node's, whose ledger follows the rotation


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(TITLE)
    return text[start:text.index("\n## ", start + len(TITLE))]


def _blocks(section: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced block, the indentation of list items removed."""
    blocks = []
    for language, body in re.findall(r"```(\w*)\n(.*?)\n\s*```", section, re.S):
        lines = body.splitlines()
        indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        blocks.append((language, "\n".join(line[indent:] for line in lines)))
    return blocks


def _the_block(blocks: list[tuple[str, str]], language: str, containing: str) -> str:
    (found,) = [text for lang, text in blocks if lang == language and containing in text]
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _namespaces_available() -> bool:
    """Unprivileged user and network namespaces, and the tools to wire them."""
    if os.environ.get("FEDTALLY_TEST_NO_NETNS") or not all(
            shutil.which(tool) for tool in ("unshare", "nsenter", "ip")):
        return False
    probe = subprocess.run(["unshare", "-Urn", "sh", "-c", "ip link add br0 type bridge && "
                            "ip link add v0 type veth peer name v1"], capture_output=True,
                           timeout=10, check=False)
    return probe.returncode == 0


class Network:
    """Each machine's own network namespace, wired to one private bridge (10.77.0.0/24)
    inside a user namespace that the test owns: no root needed, nothing reaches the host's
    network, and a machine's 127.0.0.1 is its own. The authority's machine has no link at
    all (it stays offline)."""

    SUBNET = "10.77.0"

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.lab = self._hold(["unshare", "-Urn", "sleep", "3600"])
        self._in(self.lab, "ip link add br0 type bridge && ip link set br0 up")
        self.holders: dict[str, int] = {}
        self.addresses: dict[str, str] = {}

    def _hold(self, command: list[str]) -> int:
        """Start a process that holds a namespace; its pid once it runs `sleep`."""
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        comm = Path(f"/proc/{process.pid}/comm")
        deadline = time.monotonic() + 10
        while comm.read_text().strip() != "sleep":  # set up, then exec'd into sleep
            assert process.poll() is None and time.monotonic() < deadline, command
            time.sleep(0.01)
        return process.pid

    def enter(self, pid: int) -> list[str]:
        return ["nsenter", "-t", str(pid), "-U", "-n", "--preserve-credentials"]

    def _in(self, pid: int, script: str) -> None:
        subprocess.run([*self.enter(pid), "sh", "-euc", script], check=True, timeout=10,
                       capture_output=True)

    def add(self, machine: str, *, linked: bool = True) -> list[str]:
        """A namespace for ``machine``; the command prefix that runs in it."""
        holder = self._hold([*self.enter(self.lab), "unshare", "-n", "sleep", "3600"])
        self.holders[machine] = holder
        script = "ip link set lo up"
        if linked:
            number = len(self.addresses) + 1
            self.addresses[machine] = f"{self.SUBNET}.{number}"
            self._in(self.lab, f"ip link add v{number} type veth peer name eth0 netns "
                               f"{holder} && ip link set v{number} master br0 up")
            script += (f" && ip addr add {self.addresses[machine]}/24 dev eth0"
                       " && ip link set eth0 up")
        self._in(holder, script)
        return self.enter(holder)

    def close(self) -> None:
        for process in reversed(self.processes):
            process.kill()
            process.wait(10)


class Machines:
    """The folders standing for machines, and the services started in them: each in a
    network namespace of its own where available, else all on this host's loopback."""

    def __init__(self, root: Path, network: Network | None) -> None:
        self.root = root
        self.network = network
        self.prefix: dict[str, list[str]] = {}
        for machine in ("authority", *MACHINES):
            self.folder(machine).mkdir()
            if network is not None:
                self.prefix[machine] = network.add(machine, linked=machine != "authority")
        if network is None:  # one loopback for all: a free port, 127.0.0.1 for the name
            self.host, self.port, self.listen = "127.0.0.1", _free_port(), "127.0.0.1"
        else:  # the guide's port; the aggregator's own address; every interface it has
            self.host, self.port, self.listen = network.addresses["aggregator"], 8765, "0.0.0.0"
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[str, Path]] = {}
        # `fedtally` on the PATH runs this interpreter's fedtally, as after `pip install`
        bin_dir = root / "bin"
        bin_dir.mkdir()
        command = bin_dir / "fedtally"
        command.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m fedtally "$@"\n')
        command.chmod(0o755)
        self.env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                        PYTHONUNBUFFERED="1")

    def folder(self, machine: str) -> Path:
        return self.root / machine

    def here(self, text: str, machine: str) -> str:
        """The guide's text with this test's stand-ins for what only a real site has."""
        return (text.replace("aggregator.example.org", self.host)
                .replace("8765", str(self.port))
                .replace("/data/", f"{self.folder(machine)}/data/"))

    def run(self, machine: str, script: str, cwd: Path, *, literal: bool = False) -> str:
        command = script if literal else self.here(script, machine)
        done = subprocess.run([*self.prefix.get(machine, []), "bash", "-euc", command],
                              cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=TIMEOUT_S * 2, check=False)
        assert done.returncode == 0, f"{machine}: {command}\n{done.stdout}{done.stderr}"
        return done.stdout

    def serve(self, machine: str, command: str, cwd: Path) -> None:
        self.commands[machine] = (command, cwd)
        log = (self.folder(machine) / "service.log").open("ab")
        with log:
            self.services[machine] = subprocess.Popen(
                [*self.prefix.get(machine, []), *shlex.split(self.here(command, machine))],
                cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

    def log(self, machine: str) -> str:
        path = self.folder(machine) / "service.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def restart(self) -> None:
        self.stop()
        for machine, (command, cwd) in list(self.commands.items()):
            self.serve(machine, command, cwd)

    def stop(self) -> None:
        for process in self.services.values():
            if process.poll() is None:
                process.terminate()
        for process in self.services.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    network = Network() if _namespaces_available() else None
    try:
        running = Machines(tmp_path, network)
        try:
            yield running
        finally:
            running.stop()
    finally:
        if network is not None:
            network.close()


def test_following_the_deployment_guide_literally_gives_a_working_federation(
        machines: Machines) -> None:
    section = _section()
    blocks = _blocks(section)
    authority = machines.folder("authority")

    # 1. the authority: init, then one archive per machine, from inside fed/
    init = _the_block(blocks, "sh", "federation init")
    machines.run("authority", init, authority)
    pack = _the_block(blocks, "sh", "tar -czf")
    machines.run("authority", pack, authority)
    readme = (authority / "fed" / "README.txt").read_text()
    for line in pack.splitlines()[1:]:  # fed/README.txt prints the same lines
        assert f"pack: {line}" in readme
    # the authority's folder goes offline: nothing below may read it any more
    archives = {machine: (authority / f"{machine}.tgz").read_bytes() for machine in MACHINES}
    (authority / "fed").rename(authority / "offline")

    # 2. each machine gets its archive (and nothing else of the authority's) and unpacks it
    unpack = _the_block(blocks, "sh", "tar -xzf")
    assert "hosp_a.tgz" in unpack
    for machine in MACHINES:
        (machines.folder(machine) / f"{machine}.tgz").write_bytes(archives[machine])
        machines.run(machine, unpack.replace("hosp_a.tgz", f"{machine}.tgz"),
                     machines.folder(machine))
        unpacked = machines.folder(machine) / "fedtally"
        with tarfile.open(machines.folder(machine) / f"{machine}.tgz") as archive:
            packed = {member.name for member in archive.getmembers() if member.isfile()}
        assert {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()} \
            == packed
        assert (unpacked / "keys" / f"{machine}.key").stat().st_mode & 0o077 == 0
    work = {machine: machines.folder(machine) / "fedtally" for machine in MACHINES}

    # 3. the aggregator: "host" is the address to listen on (the guide's "0.0.0.0" in a
    # namespace of its own; loopback when every machine shares this host's), then serve
    assert '`"0.0.0.0"` listens on every interface' in section
    config_path = work["aggregator"] / "aggregator.json"
    config = json.loads(config_path.read_text())
    assert config["host"] == machines.host  # init wrote the public name
    config_path.write_text(json.dumps({**config, "host": machines.listen}))
    machines.serve("aggregator", _the_block(blocks, "sh", "aggregator serve"),
                   work["aggregator"])

    # 4. each hospital: rows without a dataset column (the snippet's "dataset" names
    # them), the written data model, the guide's own policy; then check and serve
    snippet = _the_block(blocks, "json", '"data":')
    policy = _the_block(blocks, "json", "allowed_methods")
    node_commands = _the_block(blocks, "sh", "node serve").splitlines()
    rows = three_hospitals(scale=0.1)
    for name in NODES:
        data = machines.folder(name) / "data"
        data.mkdir()
        rows[name].drop(columns="dataset").to_csv(data / "registry.csv", index=False)
        (data / "datamodel.json").write_text(json.dumps(stroke_model().to_json()))
        (data / "policy.json").write_text(policy)
        node_json = work[name] / name / "node.json"
        edits = json.loads(machines.here(snippet.replace("hosp_a", name), name))
        assert set(edits) == {"data", "data_model", "policy"}
        node_json.write_text(json.dumps({**json.loads(node_json.read_text()), **edits}))
        for command in node_commands:
            command = command.replace("hosp_a", name)
            if " serve " in command:
                machines.serve(name, command, work[name])
            else:
                checked = machines.run(name, command, work[name])
                assert f"{name}: {len(rows[name])} valid rows of stroke:1" in checked

    # 5. the researcher: once every node is online, the guide's script as it stands
    script = _the_block(blocks, "python", "fedtally.connect")
    assert "ca=" not in script.split("connect(", 1)[1].split(")", 1)[0]
    (work["alice"] / "query.py").write_text(script)
    total = sum(len(frame) for frame in rows.values())
    _query_when_online(machines, work["alice"], total)

    # 6. a membership change: the authority takes its folder out again and rotates a key;
    # every machine gets the new federation.json over its old one, the key's owner its new
    # key, and the aggregator and the nodes restart
    step6 = section[section.index("**Changing membership later**"):]
    assert "rotate-key fed NAME" in step6 and "copy the new `federation.json`" in step6
    assert "`keys/NAME.key.previous`" in step6
    (authority / "offline").rename(authority / "fed")
    machines.run("authority", f"fedtally federation rotate-key fed {ROTATED}", authority)
    manifest = (authority / "fed" / "federation.json").read_bytes()
    for machine in MACHINES:
        (work[machine] / "federation.json").write_bytes(manifest)
    for name in (f"{ROTATED}.key", f"{ROTATED}.key.previous"):  # a node gets its old key too
        target = work[ROTATED] / "keys" / name
        target.write_bytes((authority / "fed" / "keys" / name).read_bytes())
        target.chmod(0o600)
    machines.restart()
    _query_when_online(machines, work["alice"], total)
    # the node recorded the rotation in its ledger and deleted its old key
    assert not (work[ROTATED] / "keys" / f"{ROTATED}.key.previous").exists()
    for machine in MACHINES[:-1]:  # every service still up, none wrote a traceback
        assert machines.services[machine].poll() is None, machines.log(machine)
        assert "Traceback" not in machines.log(machine)


WAIT_FOR_NODES = """
import sys, time, socket
from fedtally import connect
from fedtally.local import wait_for_nodes
host, port, *nodes = sys.argv[1:]
deadline = time.monotonic() + 60
while True:  # the aggregator listens once it has read its files
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
client = connect(bundle="researchers/alice.json")
try:
    wait_for_nodes(client, set(nodes), timeout_s=60)
finally:
    client.close()
"""


def _query_when_online(machines: Machines, alice: Path, total: int) -> None:
    """On alice's machine: wait until every node is online, then run her script."""
    wait = shlex.join([sys.executable, "-c", WAIT_FOR_NODES, machines.host,
                       str(machines.port), *NODES])
    try:
        machines.run("alice", wait, alice, literal=True)
    except AssertionError as exc:
        logs = "\n".join(f"--- {m}\n{machines.log(m)[-2000:]}" for m in MACHINES[:-1])
        raise AssertionError(f"{exc}\nthe nodes did not come online:\n{logs}") from None
    out = machines.run("alice", f"{shlex.quote(sys.executable)} query.py", alice)
    assert f"{total} patients" in out
    for name in NODES:
        assert name in out
    assert "nihss" in out and "age" in out


def test_the_folder_readme_follows_membership_changes(tmp_path: Path) -> None:
    """fed/README.txt lists each machine's files and pack line for the members of the
    manifest as it now is, after every change the guide's step 6 names."""
    from fedtally.federation import add_member, init_federation, remove_member, rotate_key

    fed = tmp_path / "fed"
    init_federation(fed, ["hosp_a", "hosp_b", "hosp_c"], ["alice"])
    readme = (fed / "README.txt").read_text()
    assert "version 1" in readme and "hosp_d" not in readme
    add_member(fed, "hosp_d", "node")
    readme = (fed / "README.txt").read_text()
    assert "version 2" in readme and "NODE hosp_d:" in readme
    assert ("pack: tar -czf ../hosp_d.tgz federation.json keys/hosp_d.key tls/ca.pem "
            "hosp_d/node.json") in readme
    add_member(fed, "bob", "researcher")
    assert "pack: tar -czf ../bob.tgz federation.json keys/bob.key tls/ca.pem " \
        "researchers/bob.json" in (fed / "README.txt").read_text()
    remove_member(fed, "hosp_b")
    readme = (fed / "README.txt").read_text()
    assert "version 4" in readme and "hosp_b" not in readme
    rotate_key(fed, "alice")
    assert "version 5" in (fed / "README.txt").read_text()
    # every file a pack line names exists in the folder
    for line in (fed / "README.txt").read_text().splitlines():
        if line.strip().startswith("pack: "):
            for name in shlex.split(line.split("pack: ", 1)[1])[3:]:
                assert (fed / name).is_file(), name


def test_a_paillier_nodes_archive_takes_its_key_share(tmp_path: Path) -> None:
    from fedtally.federation import init_federation, load_manifest, machine_files

    fed = tmp_path / "fed"
    init_federation(fed, ["hosp_a", "hosp_b", "hosp_c"], ["alice"], protection="paillier",
                    paillier_bits=2048)
    manifest = load_manifest(fed / "federation.json")
    assert "keys/hosp_a.share" in machine_files(manifest, "hosp_a")
    assert not any(f.endswith(".share") for f in machine_files(manifest, "alice"))
    for name in ("aggregator", *NODES, "alice"):
        assert all((fed / path).is_file() for path in machine_files(manifest, name))
