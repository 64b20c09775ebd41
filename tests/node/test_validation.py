"""Validation of rows against the data model, and coercion for the statistics code."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from node.datasource import DataSource
from node.validation import (
    Problem,
    ValidationFailed,
    as_codes,
    check,
    check_valid,
    coerce,
    missing_mask,
    validate,
)
from protocol.errors import DataError
from stats.datamodel import DataModel, LocalDataError, Variable

PEER = Path(__file__).resolve().parents[2].parent / "shared" / "peer" / "exareme2"
PEER_FOLDERS = sorted(p.parent for p in PEER.glob("data/*/CDEsMetadata.json")) if PEER.is_dir() else []


def _model() -> DataModel:
    variables = [
        Variable("dataset", "Dataset", "text", True, ("d1", "d2")),
        Variable("age", "Age", "real", False, min=0.0, max=130.0),
        Variable("score", "Score", "int", False, min=0.0, max=30.0),
        Variable("sex", "Sex", "text", True, ("F", "M")),
        Variable("stage", "Stage", "int", True, ("0", "1", "2")),
        Variable("note", "Note", "text", False),
    ]
    return DataModel("toy", "1", {v.code: v for v in variables})


def _rows(**columns: list[object]) -> pd.DataFrame:
    base: dict[str, list[object]] = {
        "dataset": ["d1", "d1", "d2"],
        "age": ["61.5", None, "70"],
        "score": ["12", "30", None],
        "sex": ["F", None, "M"],
        "stage": ["0", "2", None],
        "note": ["anything", None, "at all"],
    }
    base.update(columns)
    return pd.DataFrame({k: pd.Series(v, dtype="str") for k, v in base.items()})


def test_clean_rows_with_missing_values() -> None:
    df = _rows(age=["61.5", "", " "], sex=["F", "", None])
    assert validate(df, _model()) == []
    check_valid(df, _model())


def test_every_problem_names_row_and_column() -> None:
    df = _rows(
        dataset=["d1", "d3", None],
        age=["abc", "-1", "inf"],
        score=["12.5", "31", "7"],
        sex=["F", "X", "f"],
        stage=["3", "1", "2"],
    )
    found = {(p.row, p.column): p.message for p in validate(df, _model())}
    assert found == {
        (1, "age"): "value 'abc' is not a number",
        (1, "score"): "value '12.5' is not an integer",
        (1, "stage"): "value '3' is not a code of ('0', '1', '2')",
        (2, "dataset"): "value 'd3' is not a code of ('d1', 'd2')",
        (2, "age"): "value '-1' is below the minimum 0",
        (2, "score"): "value '31' is above the maximum 30",
        (2, "sex"): "value 'X' is not a code of ('F', 'M')",
        (3, "dataset"): "the row has no dataset",
        (3, "age"): "value 'inf' is not finite",
        (3, "sex"): "value 'f' is not a code of ('F', 'M')",
    }


def test_problems_come_in_row_order() -> None:
    df = _rows(age=["x", "y", "z"], sex=["Q", "F", "Q"])
    problems = validate(df, _model())
    assert [(p.row, p.column) for p in problems] == [
        (1, "age"), (1, "sex"), (2, "age"), (3, "age"), (3, "sex")
    ]
    assert str(problems[0]) == "row 1, column 'age': value 'x' is not a number"
    assert validate(df, _model(), limit=2) == problems[:2]


def test_unknown_columns_warn_unless_strict() -> None:
    df = _rows().assign(agee=["1", "2", "3"])
    [warning] = validate(df, _model())
    assert warning == Problem(None, "agee", "not a variable of data model toy:1", "warning")
    assert str(warning) == "column 'agee': not a variable of data model toy:1 (warning)"
    check_valid(df, _model())  # warnings do not fail
    [error] = validate(df, _model(), strict=True)
    assert error.severity == "error"
    with pytest.raises(ValidationFailed):
        check_valid(df, _model(), strict=True)


def test_dataset_column_is_required() -> None:
    df = _rows().drop(columns="dataset")
    [problem] = validate(df, _model())
    assert problem.row is None and problem.column == "dataset"
    no_dataset_model = DataModel("bare", "1", {"age": Variable("age", "Age", "real", False)})
    messages = [p.message for p in validate(pd.DataFrame({"age": [1.0]}), no_dataset_model)]
    assert any("no dataset variable" in m for m in messages)


def test_check_valid_lists_twenty_and_counts_all() -> None:
    n = 50
    df = pd.DataFrame({"dataset": ["d1"] * n, "age": ["old"] * n, "sex": ["Q"] * n})
    with pytest.raises(ValidationFailed) as info:
        check_valid(df, _model())
    error = info.value
    assert isinstance(error, DataError) and not error.public
    assert error.total == 100 and len(error.problems) == 20
    text = str(error)
    assert text.startswith("100 problem(s) in the data for model toy:1:")
    assert "row 1, column 'age': value 'old' is not a number" in text
    assert text.endswith("... and 80 more")


def test_typed_frames() -> None:
    df = pd.DataFrame(
        {
            "dataset": ["d1", "d2", "d2", "d1"],
            "age": [61.5, np.nan, np.inf, 12.0],
            "score": pd.array([1, None, 40, 3], dtype="Int64"),
            "sex": pd.Categorical(["F", "M", None, "F"]),
            "stage": [0.0, 1.0, np.nan, 2.5],  # numeric codes compare as "0", "1"
            "note": [None, "x", 3, b"raw"],
        }
    )
    found = {(p.row, p.column) for p in validate(df, _model())}
    assert found == {(3, "age"), (3, "score"), (4, "stage")}
    booleans = _rows()
    booleans["age"] = pd.Series([True, 1.5, None], dtype=object)  # a boolean is not a number
    assert [p.row for p in validate(booleans, _model()) if p.column == "age"] == [1]
    objects = _rows()
    objects["score"] = pd.Series([1, 30, None], dtype=object)
    assert validate(objects, _model()) == []


def test_as_codes_normalises_numbers() -> None:
    codes = as_codes(pd.Series([1.0, 2.5, np.nan, -3.0]))
    assert codes.tolist()[:2] == ["1", "2.5"] and pd.isna(codes.iloc[2]) and codes.iloc[3] == "-3"
    assert as_codes(pd.Series([True, False])).tolist() == ["True", "False"]


def test_coerce_types_for_statistics() -> None:
    df = _rows(age=["61.5", " ", "70"]).assign(extra=["1", "2", "3"])
    out = coerce(df, _model())
    assert list(out.columns) == ["dataset", "age", "score", "sex", "stage", "note"]
    assert out["age"].dtype == np.float64 and np.isnan(out["age"].iloc[1])
    assert str(out["score"].dtype) == "Int64" and out["score"].tolist()[:2] == [12, 30]
    assert pd.isna(out["score"].iloc[2])
    assert out["sex"].tolist()[0] == "F" and pd.isna(out["sex"].iloc[1])
    assert pd.api.types.is_string_dtype(out["sex"].dtype)
    assert validate(out, _model()) == []
    with pytest.raises(LocalDataError, match="'age'"):
        coerce(_rows(age=["old", None, None]), _model())
    with pytest.raises(LocalDataError, match="'score'"):
        coerce(_rows(score=["1.5", None, None]), _model())


def _missing_in_every_dtype() -> list[pd.DataFrame]:
    """The same valid rows with missing cells, as pandas 2 and 3 may each hold them."""
    text = {
        "dataset": ["d1", "d2", "d1", "d2"],
        "age": ["61.5", None, "", "7"],
        "score": ["12", None, "3", " "],
        "sex": ["F", None, "M", ""],
        "stage": ["0", "2", None, " "],
        "note": ["nan", None, "", "x"],
    }
    return [
        pd.DataFrame(text, dtype=object),
        pd.DataFrame(text, dtype=object).fillna(np.nan),
        pd.DataFrame(text, dtype=object).fillna(pd.NA),
        pd.DataFrame({k: pd.Series(v, dtype="str") for k, v in text.items()}),
        pd.DataFrame({k: pd.Series(v, dtype="string") for k, v in text.items()}),
        pd.DataFrame(text).assign(sex=pd.Categorical(["F", None, "M", None])),
    ]


def test_missing_values_are_never_stringified() -> None:
    # pandas 2 turns NaN into 'nan' under astype(str), pandas 3 keeps it missing: either
    # way a missing cell is missing and the text 'nan' is a value like any other
    for df in _missing_in_every_dtype():
        assert validate(df, _model(), strict=True) == []
        out = coerce(df, _model())
        assert out["sex"].isna().tolist() == [False, True, False, True]
        assert out["stage"].isna().tolist() == [False, False, True, True]
        assert out["note"].tolist()[0] == "nan" and out["note"].isna().tolist()[1:] == [
            True, True, False
        ]
        assert out["score"].isna().tolist() == [False, True, False, True]
        for code in ("sex", "stage", "note", "dataset"):
            assert pd.api.types.is_string_dtype(out[code].dtype)
            assert "nan" not in out[code].dropna().tolist()[1:]
        assert validate(out, _model(), strict=True) == []
        assert validate(df.assign(sex=["F", "nan", "M", None]), _model()) == [
            Problem(2, "sex", "value 'nan' is not a code of ('F', 'M')")
        ]


def test_as_codes_and_missing_mask_keep_missing_missing() -> None:
    for values in (["a", None, np.nan], ["a", pd.NA, None]):
        for series in (pd.Series(values, dtype=object), pd.Series(values, dtype="string")):
            codes = as_codes(series)
            assert codes.iloc[0] == "a" and codes.iloc[1:].isna().all()
            assert missing_mask(series).tolist() == [False, True, True]
    mixed = pd.Series([1, " ", None, "x", np.nan], dtype=object)
    assert missing_mask(mixed).tolist() == [False, True, True, False, True]
    assert as_codes(mixed).tolist()[:2] == ["1", " "] and as_codes(mixed).iloc[2:3].isna().all()


@pytest.fixture(scope="module")
def peer_folders() -> list[Path]:
    if not PEER_FOLDERS:
        pytest.skip(f"MIP reference data not found at {PEER} (../shared/peer/exareme2)")
    return PEER_FOLDERS


def test_every_peer_csv_validates_clean(peer_folders: list[Path]) -> None:
    checked = 0
    for folder in peer_folders:
        model = DataModel.from_cdes(folder)
        frames = []
        for path in sorted(folder.glob("*.csv")):
            df = DataSource("csv", path=path).load()
            assert validate(df, model, strict=True) == [], path
            frames.append(df)
            checked += 1
        typed = coerce(pd.concat(frames, ignore_index=True), model)
        assert validate(typed, model, strict=True) == [], folder
    assert checked == len(list(PEER.glob("data/*/*.csv"))) > 40


def test_broken_peer_csv_reports_row_and_column(peer_folders: list[Path], tmp_path: Path) -> None:
    folder = PEER / "data" / "dementia_v_0_1"
    model = DataModel.from_cdes(folder)
    lines = (folder / "edsd0.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")  # data row 3
    row[header.index("subjectageyears")] = "two hundred"
    row[header.index("gender")] = "X"
    lines[3] = ",".join(row)
    broken = tmp_path / "edsd0.csv"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationFailed) as info:
        check_valid(DataSource("csv", path=broken).load(), model)
    assert info.value.total == 2
    assert {(p.row, p.column) for p in info.value.problems} == {
        (3, "subjectageyears"), (3, "gender")
    }
    assert "row 3, column 'gender': value 'X' is not a code of ('M', 'F')" in str(info.value)


def test_fast_on_wide_text_frames() -> None:
    n, reals, categoricals = 100_000, 150, 20
    rng = np.random.default_rng(7)
    variables = [Variable("dataset", "dataset", "text", True, ("d1", "d2"))]
    variables += [Variable(f"r{i}", f"r{i}", "real", False, min=0.0, max=1.0) for i in range(reals)]
    variables += [
        Variable(f"c{i}", f"c{i}", "text", True, ("a", "b", "c")) for i in range(categoricals)
    ]
    model = DataModel("wide", "1", {v.code: v for v in variables})
    numbers = pd.Series(rng.random(n).round(4)).astype("str")
    letters = pd.Series(rng.choice(["a", "b", "c"], n), dtype="str")
    columns = {"dataset": pd.Series(["d1"] * n, dtype="str")}
    columns |= {f"r{i}": numbers for i in range(reals)}
    columns |= {f"c{i}": letters for i in range(categoricals)}
    df = pd.DataFrame(columns)
    df.loc[17, "r3"] = "oops"
    start = time.perf_counter()
    problems = validate(df, model)
    elapsed = time.perf_counter() - start
    assert [(p.row, p.column) for p in problems] == [(18, "r3")]
    assert elapsed < 10, f"validation of 100k x 171 took {elapsed:.1f} s"


# --- required, unknown and absent columns; the node check report ------------------------


def test_a_renamed_header_is_an_error_naming_the_variable() -> None:
    """A column the model does not know next to a variable the data lacks: served, every
    filter on the real variable would silently match nothing."""
    misspelt = _rows().rename(columns={"sex": "Sex "})
    [problem] = validate(misspelt, _model())
    assert (problem.column, problem.severity) == ("Sex ", "error")
    assert "did you mean 'sex'" in problem.message
    with pytest.raises(ValidationFailed, match="did you mean 'sex'"):
        check_valid(misspelt, _model())
    renamed = _rows().rename(columns={"sex": "gender"})
    [problem] = validate(renamed, _model())
    assert "lacks 1 of its variables ('sex'): a renamed header?" in problem.message
    # either alone is fine: an extra column is ignored, a variable may be absent (MIP)
    assert [p.severity for p in validate(_rows(extra=["1", "2", "3"]), _model())] == ["warning"]
    assert validate(_rows().drop(columns="sex"), _model()) == []


def test_the_patient_identifier_is_required() -> None:
    variables = dict(_model().variables)
    variables["pid"] = Variable("pid", "patient", "text", False)
    model = DataModel("toy", "1", variables, longitudinal=True, patient_id="pid",
                      max_rows_per_patient=3)
    [problem] = validate(_rows(), model)
    assert problem.column == "pid" and "patient identifier" in problem.message
    assert validate(_rows(pid=["p1", "p1", "p2"]), model) == []


def test_check_summarises_every_variable() -> None:
    df = _rows(age=["61.5", "140", "x"], sex=["F", "U", None], note=None).drop(columns="note")
    df["extra"] = "1"
    report = check(df, _model())
    assert not report.ok and report.errors == 4  # extra next to an absent note, 140, x, U
    summary = report.summary
    assert summary.loc["age"].tolist() == ["real [0, 130]", True, 3, 0, 1, 1]
    assert summary.loc["sex"].tolist() == ["categorical (2 levels)", True, 2, 1, 1, 0]
    assert summary.loc["score", "missing"] == 1
    assert report.absent == ("note",) and report.unknown == ("extra",)
    text = report.text()
    for expected in ("3 rows of toy:1; datasets d1, d2", "out of range",
                     "no column (missing for every row here): note",
                     "not in the data model: extra", "4 problem(s):",
                     "row 2, column 'age': value '140' is above the maximum 130",
                     "column 'extra': not a variable of data model toy:1, while the data lacks",
                     "NOT valid"):
        assert expected in text, expected
    assert check(_rows(), _model()).text().endswith("the data is valid")


def test_values_people_type_get_a_hint_and_bounds_show_exactly() -> None:
    [comma] = validate(_rows(age=["61,5", None, "70"]), _model())
    assert "decimal comma" in comma.message
    [word] = validate(_rows(age=["NA", None, "70"]), _model())
    assert word.message == "value 'NA' is not a number (a missing value? leave the cell empty)"
    model = DataModel("toy", "1", {**_model().variables,
                                   "age": Variable("age", "Age", "real", False,
                                                   max=-0.98334576701081211)})
    [above] = validate(_rows(age=["-0.98334576701081200", None, None]), model)
    assert above.message.endswith("above the maximum -0.9833457670108121")


def test_node_serve_logs_the_warnings_and_absent_variables(
        caplog: pytest.LogCaptureFixture) -> None:
    """They were computed and never shown: node serve validates with check_valid."""
    df = _rows(extra=["1", "2", "3"])
    with caplog.at_level("INFO", logger="fedtally.node"):
        check_valid(df, _model())
        check_valid(_rows().drop(columns="note"), _model())
    text = caplog.text
    assert "column 'extra': not a variable of data model toy:1 (warning)" in text
    assert "no column for 1 variable(s), missing at this node: note" in text
