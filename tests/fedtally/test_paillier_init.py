"""`federation init --protection paillier`: init as the trusted dealer of the threshold key.

Each node gets keys/<node>.share (0600) and a node.json pointing at it; the manifest carries
only public values (the modulus, the holders, the decryption threshold, the verification
base and one verification key per holder); the shares really decrypt together; every bad
option is a readable ConfigurationError before a file exists.
"""

from __future__ import annotations

import itertools
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crypto.errors import ShareError
from crypto.paillier import FastEncryptor
from crypto.randomness import SeededRandom
from crypto.sharefile import read_share_file
from crypto.threshold_paillier import KeyShare
from fedtally.cli import main
from fedtally.federation import init_federation, load_manifest
from node.config import load_key_share, load_node_config
from protocol.errors import ConfigurationError
from protocol.manifest import Manifest

NODES = ["a", "b", "c"]
RESEARCHERS = ["r"]
BITS = 2048


def _init(directory: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("rng", SeededRandom("paillier-init"))
    # dealing is checked on 2-of-3 keys, the quorum of three nodes without colluders (c = 0);
    # the bound with colluders is tested on its own below
    kwargs.setdefault("max_colluding_nodes", 0)
    kwargs.setdefault("protection", "paillier")
    kwargs.setdefault("paillier_bits", BITS)
    return init_federation(directory, kwargs.pop("nodes", NODES),
                           kwargs.pop("researchers", RESEARCHERS), **kwargs)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2048-bit Paillier federation shared by the read-only tests."""
    root = tmp_path_factory.mktemp("paillier") / "federation"
    _init(root)
    return root


@pytest.fixture
def copy(fed: Path, tmp_path: Path) -> Path:
    """A private copy of the federation for tests that change files (modes preserved)."""
    target = tmp_path / "federation"
    shutil.copytree(fed, target)
    return target


def _manifest(root: Path) -> Manifest:
    return load_manifest(root / "federation.json")


def _shares(root: Path) -> dict[str, KeyShare]:
    manifest = _manifest(root)
    return {name: load_key_share(root / "keys" / f"{name}.share", manifest, name)
            for name in manifest.nodes()}


def _strings_and_numbers(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings_and_numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings_and_numbers(v)
    else:
        yield value


# --- what init writes ----------------------------------------------------------------------


def test_each_node_gets_a_private_share_file(fed: Path) -> None:
    manifest = _manifest(fed)
    key = manifest.paillier_key
    assert key is not None
    for name in NODES:
        path = fed / "keys" / f"{name}.share"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        raw = read_share_file(path)
        assert (raw.name, raw.federation_id) == (name, manifest.federation_id)
        assert raw.index == key.index(name)
        assert raw.n == key.threshold.public.n
    assert stat.S_IMODE((fed / "keys").stat().st_mode) == 0o700
    # shares for nodes only: no researcher, auditor or aggregator share
    assert sorted(p.name for p in (fed / "keys").glob("*.share")) == [f"{n}.share" for n in NODES]
    assert not [p for p in fed.rglob("*") if p.name.endswith(".tmp")]


def test_the_manifest_names_the_key_with_a_strict_majority(fed: Path) -> None:
    manifest = _manifest(fed)
    assert manifest.protection == "paillier"
    key = manifest.paillier_key
    assert key is not None
    assert key.holders == tuple(NODES)
    assert key.threshold.threshold == 2 and key.threshold.holders == 3
    assert key.threshold.public.bits == BITS
    tp = key.threshold
    assert manifest.parameters["paillier"] == {
        "n": format(tp.public.n, "x"), "decryption_threshold": 2, "holders": NODES,
        "verification_base": format(tp.verification_base, "x"),
        "verification_keys": [format(k, "x") for k in tp.verification_keys]}
    assert len(tp.verification_keys) == len(NODES)
    # each verification key is v^(s_i) for the share init wrote for that holder
    n2 = tp.public.n_square
    for name, share in _shares(fed).items():
        assert tp.verification_key(key.index(name)) == \
            pow(tp.verification_base, share.value, int(n2))


def test_the_manifest_holds_no_secret(fed: Path) -> None:
    text = (fed / "federation.json").read_text()
    document = json.loads(text)
    paillier = document["parameters"]["paillier"]
    n_hex = paillier["n"]
    public = {n_hex, paillier["verification_base"], *paillier["verification_keys"]}
    assert len(public) == 2 + len(NODES)
    for share in _shares(fed).values():
        assert format(share.value, "x") not in text
        assert format(share.value, "x")[:64] not in text
        assert str(share.value)[:64] not in text
        assert format(share.value, "x")[-64:] not in text
    # the only big integers in it are n, the verification base and the verification keys
    # (units mod n^2, each below n^2): every other value is short (names, 64-hex public
    # keys, a 128-hex signature, small numbers)
    for value in _strings_and_numbers(document):
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            assert abs(value) < 2**32, value
        else:
            assert isinstance(value, str)
            assert value in public or len(value) <= 128, value[:40]
    assert len(n_hex) == BITS // 4
    n = int(n_hex, 16)
    for value in public - {n_hex}:
        assert int(value, 16) < n * n and len(value) <= BITS // 2


def test_node_configs_point_at_the_share(fed: Path) -> None:
    for name in NODES:
        document = json.loads((fed / name / "node.json").read_text())
        assert document["paillier_share"] == f"../keys/{name}.share"
        assert (fed / name / document["paillier_share"]).resolve() == \
            (fed / "keys" / f"{name}.share").resolve()


def test_load_node_config_loads_the_nodes_share(fed: Path) -> None:
    manifest = _manifest(fed)
    key = manifest.paillier_key
    assert key is not None
    for name in NODES:
        config = load_node_config(fed / name / "node.json")
        share = config.key_share
        assert share is not None
        assert share.index == key.index(name)
        assert share.threshold_public == key.threshold
        assert share.value == read_share_file(fed / "keys" / f"{name}.share").share
        assert str(share.value) not in repr(config)


def test_the_readme_lists_the_share_files(fed: Path) -> None:
    readme = (fed / "README.txt").read_text()
    for name in NODES:
        assert f"keys/{name}.share" in readme
    assert "share of the decryption key" in readme
    for share in _shares(fed).values():
        assert format(share.value, "x")[:32] not in readme


@pytest.mark.parametrize("plaintexts", [[0], [1, 2, 3], [(1 << 2046) + 12345]])
def test_any_two_shares_decrypt_and_one_does_not(fed: Path, plaintexts: list[int]) -> None:
    key = _manifest(fed).paillier_key
    assert key is not None
    encryptor = FastEncryptor(key.threshold.public, SeededRandom("paillier-init/encrypt"))
    ciphertexts = encryptor.encrypt_many(plaintexts)
    shares = _shares(fed)
    partials = {share.index: [int(c) for c in share.partial_decrypt(ciphertexts)]
                for share in shares.values()}
    for pair in itertools.combinations(sorted(partials), 2):
        assert key.threshold.combine({i: partials[i] for i in pair}) == plaintexts
    assert key.threshold.combine(partials) == plaintexts
    with pytest.raises(ShareError, match="needed"):
        key.threshold.combine({1: partials[1]})


def test_a_higher_decryption_threshold_and_unsorted_nodes(tmp_path: Path) -> None:
    root = tmp_path / "f"
    _init(root, nodes=["c", "a", "b"], decryption_threshold=3,
          rng=SeededRandom("paillier-init/three"))
    key = _manifest(root).paillier_key
    assert key is not None and key.threshold.threshold == 3
    assert key.holders == ("a", "b", "c")  # key-share order is the sorted node list
    shares = _shares(root)
    assert [shares[name].index for name in ("a", "b", "c")] == [1, 2, 3]
    encryptor = FastEncryptor(key.threshold.public, SeededRandom("paillier-init/encrypt3"))
    ciphertexts = encryptor.encrypt_many([42, 7])
    partials = {s.index: [int(c) for c in s.partial_decrypt(ciphertexts)]
                for s in shares.values()}
    assert key.threshold.combine(partials) == [42, 7]
    with pytest.raises(ShareError, match="needed"):
        key.threshold.combine({1: partials[1], 2: partials[2]})


# --- bad options ------------------------------------------------------------------------------


@pytest.mark.parametrize("options,match", [
    ({"decryption_threshold": 1}, r"more than \(N \+ c\)/2"),
    ({"decryption_threshold": 4}, r"\[2, 3\]"),
    ({"decryption_threshold": 0}, "decryption threshold"),
    ({"decryption_threshold": -1}, "decryption threshold"),
    ({"decryption_threshold": 2.0}, "decryption threshold"),
    ({"decryption_threshold": True}, "decryption threshold"),
    ({"decryption_threshold": "2"}, "decryption threshold"),
    ({"paillier_bits": 1024}, "2048"),
    ({"paillier_bits": 2047}, "even"),
    ({"paillier_bits": 2049}, "even"),
    ({"paillier_bits": 0}, "Paillier key size"),
    ({"paillier_bits": 8194}, "Paillier key size"),
    ({"paillier_bits": True}, "Paillier key size"),
    ({"paillier_bits": "2048"}, "Paillier key size"),
    ({"protection": "mask", "decryption_threshold": 2}, "only applies"),
    ({"protection": "mask", "decryption_threshold": 3}, "only applies"),
])
def test_bad_options_are_readable_configuration_errors(tmp_path: Path, options: dict[str, Any],
                                                       match: str) -> None:
    target = tmp_path / "f"
    with pytest.raises(ConfigurationError, match=match):
        _init(target, **options)
    assert not target.exists()


def test_a_mask_federation_has_no_shares(tmp_path: Path) -> None:
    root = tmp_path / "f"
    _init(root, protection="mask")
    assert not list((root / "keys").glob("*.share"))
    assert "paillier_share" not in json.loads((root / "a" / "node.json").read_text())
    assert ".share" not in (root / "README.txt").read_text()
    assert _manifest(root).protection == "mask"
    assert load_node_config(root / "a" / "node.json").key_share is None


# --- a node's share must be its own ---------------------------------------------------------


def test_swapped_share_files_are_refused(copy: Path) -> None:
    a, b = copy / "keys" / "a.share", copy / "keys" / "b.share"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    for name in ("a", "b"):
        with pytest.raises(ConfigurationError, match=f"{name}.share") as caught:
            load_node_config(copy / name / "node.json")
        _no_share_in(caught.value, copy)
    assert load_node_config(copy / "c" / "node.json").key_share is not None


def test_a_share_relabelled_for_another_node_is_refused(copy: Path) -> None:
    # b's share with a's name in it: the index gives it away
    document = json.loads((copy / "keys" / "b.share").read_text())
    document["name"] = "a"
    (copy / "keys" / "a.share").write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="not a share of the key"):
        load_node_config(copy / "a" / "node.json")


def test_a_share_of_another_federation_is_refused(copy: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    _init(other, rng=SeededRandom("paillier-init/other"))
    shutil.copy2(other / "keys" / "a.share", copy / "keys" / "a.share")
    with pytest.raises(ConfigurationError, match="a.share"):
        load_node_config(copy / "a" / "node.json")
    # same federation id (seeded init), another key: the modulus gives it away
    document = json.loads((copy / "keys" / "a.share").read_text())
    document["federation_id"] = _manifest(copy).federation_id
    (copy / "keys" / "a.share").write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="not a share of the key"):
        load_node_config(copy / "a" / "node.json")


def test_a_readable_missing_or_unnamed_share_is_refused(copy: Path) -> None:
    share = copy / "keys" / "a.share"
    share.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600") as caught:
        load_node_config(copy / "a" / "node.json")
    _no_share_in(caught.value, copy)
    share.unlink()
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_node_config(copy / "a" / "node.json")
    config = copy / "b" / "node.json"
    document = json.loads(config.read_text())
    del document["paillier_share"]
    config.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="paillier_share"):
        load_node_config(config)


def test_a_share_whose_value_is_not_the_manifests_key_is_refused(copy: Path) -> None:
    path = copy / "keys" / "a.share"
    document = json.loads(path.read_text())
    document["share"] = format(int(document["share"], 16) + 1, "x")
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match="a.share"):
        load_node_config(copy / "a" / "node.json")


def _no_share_in(error: BaseException, root: Path) -> None:
    texts = [str(error), repr(error)]
    for path in (root / "keys").glob("*.share"):
        value = json.loads(path.read_text())["share"]
        assert all(value[:32] not in text for text in texts)


# --- the command line ---------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedtally", *args], capture_output=True,
                          text=True, timeout=120)


def test_the_cli_writes_a_paillier_federation(tmp_path: Path) -> None:
    target = tmp_path / "fed"
    out = _run("federation", "init", str(target), "--nodes", "a,b,c", "--researchers", "r",
               "--protection", "paillier", "--paillier-bits", "2048",
               "--decryption-threshold", "2", "--max-colluding-nodes", "0")
    assert out.returncode == 0, out.stderr
    key = _manifest(target).paillier_key
    assert key is not None
    assert key.threshold.threshold == 2 and key.threshold.public.bits == 2048
    for name in NODES:
        assert stat.S_IMODE((target / "keys" / f"{name}.share").stat().st_mode) == 0o600
        assert f"keys/{name}.share" in (target / "README.txt").read_text()
        assert load_node_config(target / name / "node.json").key_share is not None
    assert "README.txt" in out.stdout


@pytest.mark.parametrize("args", [
    ("--decryption-threshold", "2"),  # the default c = 1 needs 3 of 3
    ("--decryption-threshold", "1"),
    ("--decryption-threshold", "4"),
    ("--paillier-bits", "1024"),
    ("--protection", "mask", "--decryption-threshold", "2"),
])
def test_the_cli_reports_bad_paillier_options_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    argv = ["federation", "init", str(tmp_path / "fed"), "--nodes", "a,b,c",
            "--researchers", "r", "--protection", "paillier", "--paillier-bits", "2048", *args]
    assert main(argv) == 2  # in-process: the happy path above runs the real command
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedtally: error: "), err
    assert "Traceback" not in err
    assert ("decryption threshold" in lines[0]) != ("key size" in lines[0])
    assert not (tmp_path / "fed").exists()


def test_the_default_quorum_holds_one_colluder_off(tmp_path: Path) -> None:
    # c = 1: two quorums of 2 of 3 could be {colluder, a} and {colluder, b}, each decrypting
    # another contributor set in the same round; the dealer takes 3 of 3
    root = tmp_path / "f"
    _init(root, max_colluding_nodes=1, rng=SeededRandom("paillier-init/colluder"))
    manifest = _manifest(root)
    assert manifest.max_colluding_nodes == 1
    key = manifest.paillier_key
    assert key is not None and key.threshold.threshold == 3
    with pytest.raises(ConfigurationError, match=r"in \[3, 3\] for 3 nodes and 1 colluding"):
        _init(tmp_path / "g", max_colluding_nodes=1, decryption_threshold=2)
    assert not (tmp_path / "g").exists()
