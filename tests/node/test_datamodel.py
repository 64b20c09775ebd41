"""Data models: the MIP's CDEsMetadata.json read as is, inference, JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from protocol.errors import DataError, QueryError
from stats.datamodel import DATASET, DataModel, LocalDataError, Variable

PEER = Path(__file__).resolve().parents[2].parent / "shared" / "peer" / "exareme2"
PEER_MODELS = sorted(PEER.glob("data/*/CDEsMetadata.json")) if PEER.is_dir() else []


def _minimal(**extra: object) -> dict[str, object]:
    cdes: dict[str, object] = {
        "code": "toy",
        "version": "1.0",
        "variables": [
            {
                "code": "dataset", "label": "Dataset", "sql_type": "text", "isCategorical": True,
                "enumerations": [{"code": "a", "label": "A"}, {"code": "b", "label": "B"}],
            }
        ],
        "groups": [
            {
                "code": "g", "label": "G",
                "variables": [
                    {"code": "age", "label": "Age", "sql_type": "real", "isCategorical": False,
                     "minValue": "0", "maxValue": 130, "units": "years"},
                ],
                "groups": [
                    {"code": "h", "label": "H", "variables": [
                        {"code": "sex", "label": "Sex", "sql_type": "text", "isCategorical": True,
                         "enumerations": [{"code": "F", "label": "Female"},
                                          {"code": "M", "label": "Male"}]},
                    ]},
                ],
            }
        ],
    }
    cdes.update(extra)
    return cdes


@pytest.fixture(scope="module")
def peer_models() -> list[Path]:
    if not PEER_MODELS:
        pytest.skip(f"MIP reference data not found at {PEER} (../shared/peer/exareme2)")
    return PEER_MODELS


def test_every_peer_model_parses(peer_models: list[Path]) -> None:
    for path in peer_models:
        model = DataModel.from_cdes(path.parent)
        raw = json.loads(path.read_text())
        assert (model.code, model.version) == (raw["code"], raw["version"])
        assert model.datasets(), path
        assert model.variables[DATASET].is_categorical
        # JSON round trip, plain JSON (no NaN, no pickle)
        text = json.dumps(model.to_json(), allow_nan=False)
        again = DataModel.from_json(json.loads(text))
        assert again == model
        assert again.digest() == model.digest()
        for var in model.variables.values():
            assert var.sql_type in ("int", "real", "text")
            assert var.is_categorical == bool(var.enumerations)


def test_peer_model_details(peer_models: list[Path]) -> None:
    dementia = DataModel.from_cdes(PEER / "data" / "dementia_v_0_1" / "CDEsMetadata.json")
    assert dementia.name == "dementia:0.1"
    age = dementia.variable("subjectage")
    assert (age.sql_type, age.min, age.max, age.units) == ("real", 0.0, 130.0, "years")
    assert "edsd0" in dementia.datasets() and "ppmi_test" in dementia.datasets()
    assert dementia.variable("gender").enumerations == ("M", "F")
    # free text (not categorical) is kept as such
    assert not dementia.variable("subjectcode").is_categorical
    tbi = DataModel.from_cdes(PEER / "data" / "tbi_v_0_1")
    glucose = tbi.variable("laboratory_procedure_glucose_value")  # carries "enumerations": []
    assert glucose.is_numeric and glucose.enumerations == () and glucose.min == 1.54
    longitudinal = DataModel.from_cdes(PEER / "data" / "longitudinal_dementia_v_0_1")
    assert longitudinal.longitudinal and not dementia.longitudinal


def test_nested_groups_and_string_bounds() -> None:
    model = DataModel.from_cdes(_minimal())
    assert list(model.variables) == ["dataset", "age", "sex"]
    assert model.variable("age").min == 0.0 and model.variable("age").max == 130.0
    assert model.variable("sex").enumeration_labels == ("Female", "Male")
    assert model.datasets() == ("a", "b")


def test_min_max_keys_and_blank_bounds() -> None:
    cdes = _minimal()
    cdes["variables"].append(  # type: ignore[attr-defined]
        {"code": "x", "label": "X", "sql_type": "int", "isCategorical": False, "min": 1, "max": "5",
         "units": ""}
    )
    cdes["variables"].append(  # type: ignore[attr-defined]
        {"code": "y", "label": "Y", "sql_type": "real", "isCategorical": False, "minValue": ""}
    )
    model = DataModel.from_cdes(cdes)
    assert (model.variable("x").min, model.variable("x").max) == (1.0, 5.0)
    assert model.variable("y").min is None


def test_code_and_version_from_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "my_model_v_2_10"
    folder.mkdir()
    cdes = _minimal()
    del cdes["code"], cdes["version"]
    (folder / "CDEsMetadata.json").write_text(json.dumps(cdes))
    model = DataModel.from_cdes(folder)
    assert (model.code, model.version) == ("my_model", "2.10")
    assert DataModel.from_cdes(folder, code="other", version="9").name == "other:9"
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "CDEsMetadata.json").write_text(json.dumps(cdes))
    with pytest.raises(DataError, match="code and version"):
        DataModel.from_cdes(odd)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["variables"][0].update(sql_type="float"), "sql_type"),
        (lambda c: c["variables"][0].update(isCategorical="yes"), "true or false"),
        (lambda c: c["variables"][0].pop("enumerations"), "no enumerations"),
        (lambda c: c["variables"].append(dict(c["variables"][0])), "twice"),
        (lambda c: c["variables"].clear(), "no 'dataset'"),
        (lambda c: c["groups"][0]["variables"][0].update(minValue=200), "above max"),
        (lambda c: c["groups"][0]["variables"][0].update(maxValue="lots"), "not a number"),
        (lambda c: c["variables"][0]["enumerations"].append({"code": "a"}), "twice"),
        (lambda c: c.update(groups="nope"), "must be lists"),
    ],
)
def test_invalid_models_are_refused(change: object, message: str) -> None:
    cdes = _minimal()
    change(cdes)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        DataModel.from_cdes(cdes)


def test_unreadable_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "CDEsMetadata.json"
    bad.write_text("{ not json")
    with pytest.raises(LocalDataError, match="not valid JSON") as info:
        DataModel.from_cdes(bad)
    assert str(bad) in str(info.value) and info.value.__cause__ is not None
    with pytest.raises(LocalDataError, match="does not exist"):
        DataModel.from_cdes(tmp_path / "missing.json")


def test_unknown_variable_suggests_close_matches() -> None:
    model = DataModel.from_cdes(_minimal())
    with pytest.raises(QueryError, match=r"unknown variable 'agee'.*did you mean 'age'") as info:
        model.variable("agee")
    assert info.value.public
    with pytest.raises(QueryError, match="unknown variable 'zzzz' in data model toy:1.0$"):
        model.variable("zzzz")


def test_from_json_is_strict() -> None:
    good = DataModel.from_cdes(_minimal()).to_json()
    with pytest.raises(DataError):
        DataModel.from_json({**good, "format": "pickle"})
    with pytest.raises(DataError, match="unknown keys"):
        DataModel.from_json({**good, "extra": 1})
    broken = json.loads(json.dumps(good))
    broken["variables"][1]["min"] = "NaN"
    with pytest.raises(DataError):
        DataModel.from_json(broken)


def test_digest_changes_with_the_model() -> None:
    model = DataModel.from_cdes(_minimal())
    assert model.digest() == DataModel.from_cdes(_minimal()).digest()
    cdes = _minimal()
    cdes["groups"][0]["variables"][0]["maxValue"] = 120  # type: ignore[index]
    assert DataModel.from_cdes(cdes).digest() != model.digest()
    assert hash(model) == hash(DataModel.from_cdes(_minimal()))
    with pytest.raises(TypeError):
        model.variables["age"] = model.variables["sex"]  # type: ignore[index]


def test_infer_from_rows() -> None:
    df = pd.DataFrame(
        {
            "count": pd.array([3, 1, None], dtype="Int64"),
            "ratio": [0.5, np.nan, -1.25],
            "sex": ["M", "F", None],
            "flag": [True, False, True],
            "grade": pd.Categorical(["b", "a", "b"]),
            "note": [f"free text {i}" for i in range(3)],
            "dataset": ["d1", "d1", "d2"],
        }
    )
    model = DataModel.infer(df, code="trial", version="0", max_categories=2)
    assert model.name == "trial:0"
    assert model.variable("count") == Variable("count", "count", "int", False, min=1.0, max=3.0)
    assert (model.variable("ratio").sql_type, model.variable("ratio").min) == ("real", -1.25)
    assert model.variable("ratio").max == 0.5
    assert model.variable("sex").enumerations == ("F", "M")
    assert model.variable("flag").enumerations == ("False", "True")
    assert model.variable("grade").enumerations == ("a", "b")
    assert not model.variable("note").is_categorical  # 3 values > max_categories
    assert model.datasets() == ("d1", "d2")
    assert DataModel.from_json(model.to_json()) == model


def test_infer_without_dataset_column_adds_nothing() -> None:
    model = DataModel.infer(pd.DataFrame({"x": [1.0, 2.0]}))
    assert model.name == "inferred:0"
    assert model.datasets() == ()
    assert list(model.variables) == ["x"]


def test_infer_refuses_unsupported_columns() -> None:
    with pytest.raises(DataError, match="cannot infer"):
        DataModel.infer(pd.DataFrame({"when": pd.to_datetime(["2024-01-01"])}))
