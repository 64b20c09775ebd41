"""Mistakes in node.json that were silent, refused naming what was meant: a misspelt key
("polcy" dropped the hospital's whole policy: every method, exact answers for everyone, no
budgets) and a data source's dataset the data model does not declare (its rows were left
out of every answer), while `node check` said all was well."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregator.config import load_aggregator_config
from crypto.randomness import SeededRandom
from fedtally.cli import main
from fedtally.federation import init_federation
from fedtally.synthetic import stroke_model, three_hospitals
from node.config import load_node_config
from node.service import load_data
from protocol.errors import ConfigurationError


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    init_federation(tmp_path / "fed", ["a", "b", "c"], ["alice"], rng=SeededRandom(4))
    return tmp_path / "fed"


def _edit(path: Path, **changes: object) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_every_key_init_writes_is_read(federation: Path) -> None:
    load_node_config(federation / "a" / "node.json")
    load_aggregator_config(federation / "aggregator.json")


def test_a_misspelt_node_key_is_refused_naming_the_key_meant(
        federation: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (federation / "policy.json").write_text('{"allowed_methods": ["count"]}')
    _edit(federation / "a" / "node.json", polcy="../policy.json")
    with pytest.raises(ConfigurationError,
                       match=r"unknown node configuration \(.*node\.json\) keys \['polcy'\]; "
                             r"did you mean 'policy'\?"):
        load_node_config(federation / "a" / "node.json")
    assert main(["node", "check", "--config", str(federation / "a" / "node.json")]) == 2
    assert "'polcy'" in capsys.readouterr().err


def test_a_misspelt_aggregator_key_is_refused_naming_the_key_meant(federation: Path) -> None:
    _edit(federation / "aggregator.json", prot=9000)
    with pytest.raises(ConfigurationError, match=r"keys \['prot'\]; did you mean 'port'\?"):
        load_aggregator_config(federation / "aggregator.json")


@pytest.mark.parametrize("row_store", ["duckdb", "pandas"])
def test_a_dataset_the_data_model_does_not_declare_is_refused_before_any_row_is_read(
        federation: Path, row_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = three_hospitals(scale=0.05)["hosp_c"].drop(columns=["dataset"])
    rows.to_csv(federation / "a" / "rows.csv", index=False)
    (federation / "model.json").write_text(json.dumps(stroke_model().to_json()))
    _edit(federation / "a" / "node.json", data_model="../model.json", row_store=row_store,
          data=[{"kind": "csv", "path": "rows.csv", "dataset": "hospc"}])
    config = load_node_config(federation / "a" / "node.json")
    with pytest.raises(ConfigurationError, match=r"dataset 'hospc', which data model "
                                                 r"stroke:1 does not declare .*did you mean "
                                                 r"'hosp_c'"):
        load_data(config)
    assert main(["node", "check", "--config", str(federation / "a" / "node.json")]) == 2
    assert "'hospc'" in capsys.readouterr().err
    _edit(federation / "a" / "node.json",
          data=[{"kind": "csv", "path": "rows.csv", "dataset": "hosp_c"}])
    assert load_data(load_node_config(federation / "a" / "node.json")).row_count == len(rows)


def test_a_config_that_is_not_json_says_where(federation: Path) -> None:
    path = federation / "a" / "node.json"
    path.write_text(path.read_text().replace('"data": [],', '"data": []'))
    with pytest.raises(ConfigurationError, match=r"node\.json is not valid JSON \(line \d+, "
                                                 r"column \d+: Expecting ',' delimiter\)"):
        load_node_config(path)
