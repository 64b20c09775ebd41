"""Loading rows from CSV, Parquet and SQL, and refusing broken sources readably."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from node.datasource import DataSource, load_all
from protocol.errors import ConfigurationError, DataError
from stats.datamodel import LocalDataError

PEER = Path(__file__).resolve().parents[2].parent / "shared" / "peer" / "exareme2"


def _csv(tmp_path: Path, text: str | bytes, name: str = "rows.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _sqlite(tmp_path: Path, table: str = "patients") -> Path:
    path = tmp_path / "node.sqlite"
    with sqlite3.connect(path) as con:
        con.execute(f'CREATE TABLE "{table}" (age REAL, sex TEXT, dataset TEXT)')
        con.executemany(
            f'INSERT INTO "{table}" VALUES (?, ?, ?)',
            [(61.5, "F", "d1"), (None, "M", "d1"), (70.0, None, None)],
        )
    return path


def test_csv_cells_are_read_as_written(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age,sex,code,dataset\n061,F,NA,d1\n,M,null,d1\n")
    df = DataSource("csv", path=path).load()
    assert list(df.columns) == ["age", "sex", "code", "dataset"]
    assert df["age"].tolist()[0] == "061"  # text as written: validation decides
    assert pd.isna(df["age"].iloc[1])  # only empty cells are missing
    assert df["code"].tolist() == ["NA", "null"]


def test_rows_with_empty_trailing_cells_and_blank_lines_are_fine(tmp_path: Path) -> None:
    # a short row is padded by pandas exactly like a row whose last cells are empty: only
    # the latter is well formed, whatever the pandas version
    path = _csv(tmp_path, 'a,b,dataset\n1,2,\n\n   \n3,,\n"4,5","x\ny",\n')
    df = DataSource("csv", path=path).load()
    assert df["a"].tolist() == ["1", "3", "4,5"] and df["b"].tolist()[2] == "x\ny"
    assert df["dataset"].isna().all() and pd.isna(df["b"].iloc[1])
    one_column = _csv(tmp_path, "dataset\nd1\n\nd2\n", "one.csv")
    assert DataSource("csv", path=one_column).load()["dataset"].tolist() == ["d1", "d2"]


def test_missing_cells_stay_missing_never_the_text_nan(tmp_path: Path) -> None:
    path = _csv(tmp_path, "x,dataset\nnan,\n,d1\n")
    df = DataSource("csv", path=path, dataset="site").load()
    assert df["x"].tolist()[0] == "nan" and pd.isna(df["x"].iloc[1])
    assert df["dataset"].tolist() == ["site", "d1"]


def test_default_dataset_added_or_filled(tmp_path: Path) -> None:
    without = _csv(tmp_path, "age\n1\n2\n", "a.csv")
    df = DataSource("csv", path=without, dataset="site0").load()
    assert df["dataset"].tolist() == ["site0", "site0"]
    partial = _csv(tmp_path, "age,dataset\n1,\n2,other\n", "b.csv")
    assert DataSource("csv", path=partial, dataset="site0").load()["dataset"].tolist() == [
        "site0", "other"
    ]
    assert "dataset" not in DataSource("csv", path=without).load().columns


def test_parquet_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": [1.5, None], "sex": ["F", None], "dataset": ["d", "d"]})
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path)
    df = DataSource("parquet", path=path).load()
    assert df["age"].tolist()[0] == 1.5 and pd.isna(df["age"].iloc[1])
    assert df["sex"].tolist()[0] == "F"


def test_sql_table_through_sqlalchemy(tmp_path: Path) -> None:
    db = _sqlite(tmp_path)
    source = DataSource("sql", url=f"sqlite:///{db}", table="patients", dataset="d9")
    df = source.load()
    assert df["age"].tolist()[0] == 61.5 and pd.isna(df["age"].iloc[1])
    assert df["dataset"].tolist() == ["d1", "d1", "d9"]


def test_sql_table_name_is_never_spliced_into_sql(tmp_path: Path) -> None:
    name = 'odd"; DROP TABLE other; --'
    db = _sqlite(tmp_path, table=name.replace('"', '""'))
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE other (x INTEGER)")
    df = DataSource("sql", url=f"sqlite:///{db}", table=name).load()  # quoted as a name
    assert len(df) == 3
    with pytest.raises(LocalDataError, match="does not exist"):
        DataSource("sql", url=f"sqlite:///{db}", table="x; DROP TABLE other").load()
    with sqlite3.connect(db) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
    assert "other" in tables


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
        (b"a,b\n1,caf\xe9\n", "not UTF-8"),
        (b"a,b,dataset\n1,2,d\n3,4\n", "line 3 has 2 field"),
        (b"a,b,dataset\n1,2,d\n3,4,d,9\n", "line 3 has 4 field"),
        (b"a,b,dataset\n1,2,d,9\n3,4,d\n", "line 2 has 4 field"),  # not an implicit index
        (b"a,b,dataset\r\n1,2,d\r\n\r\n3,4\r\n", "line 4 has 2 field"),
        (b'a,b,dataset\n"1,5","x\ny",d\n3,""\n', "line 4 has 2 field"),
        (b"a,b,dataset\n1,2,d\n3\n4,5,d\n", "line 3 has 1 field"),
        (b"a,a,dataset\n1,2,d\n", "'a' appears twice"),
        (b"a,,dataset\n1,2,d\n", "column 2 of the header has no name"),
        (b"\x00\x00\x00\x00,\x00\n", "binary"),
    ],
)
def test_broken_csv_is_one_readable_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = _csv(tmp_path, content, "broken.csv")
    with pytest.raises(LocalDataError, match=message) as info:
        DataSource("csv", path=path).load()
    text = str(info.value)
    assert str(path) in text and "\n" not in text and "Traceback" not in text
    assert isinstance(info.value, DataError) and not info.value.public


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(LocalDataError, match="does not exist") as info:
        DataSource("csv", path=tmp_path / "nope.csv").load()
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(LocalDataError, match="directory"):
        DataSource("csv", path=tmp_path).load()
    with pytest.raises(LocalDataError, match="does not exist"):
        DataSource("parquet", path=tmp_path / "nope.parquet").load()


def test_broken_parquet(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pd.DataFrame({"x": range(100)}).to_parquet(good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-40])
    not_parquet = _csv(tmp_path, "x\n1\n", "table.parquet")
    for path in (truncated, not_parquet):
        with pytest.raises(LocalDataError, match="not a readable Parquet file") as info:
            DataSource("parquet", path=path).load()
        assert str(path) in str(info.value) and info.value.__cause__ is not None


def test_broken_sql_sources(tmp_path: Path) -> None:
    db = _sqlite(tmp_path)
    with pytest.raises(LocalDataError, match="table does not exist"):
        DataSource("sql", url=f"sqlite:///{db}", table="missing").load()
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(LocalDataError, match="database file does not exist"):
        DataSource("sql", url=f"sqlite:///{missing}", table="t").load()
    assert not missing.exists()  # SQLite was not allowed to create it
    with pytest.raises(LocalDataError, match="URL is not valid"):
        DataSource("sql", url="not a url", table="t").load()
    with pytest.raises(LocalDataError, match="no database driver") as info:
        DataSource("sql", url="postgresql+nosuchdriver://u:secret@host/db", table="t").load()
    assert "secret" not in str(info.value)
    garbage = _csv(tmp_path, b"this is not a database" * 100, "garbage.sqlite")
    with pytest.raises(LocalDataError, match="cannot read table"):
        DataSource("sql", url=f"sqlite:///{garbage}", table="t").load()


def test_from_config(tmp_path: Path) -> None:
    source = DataSource.from_config({"path": "rows.csv", "dataset": "d0"}, base_dir=tmp_path)
    assert source == DataSource("csv", path=tmp_path / "rows.csv", dataset="d0")
    assert DataSource.from_config({"path": "/x/rows.PARQUET"}).kind == "parquet"
    assert DataSource.from_config({"url": "sqlite:///x.db", "table": "t"}).kind == "sql"
    with pytest.raises(ConfigurationError, match="unknown data source keys"):
        DataSource.from_config({"path": "a.csv", "sep": ";"})
    assert DataSource.from_config({"path": "a.csv", "delimiter": ";", "encoding": "cp1252"}) \
        == DataSource("csv", path=Path("a.csv"), delimiter=";", encoding="cp1252")
    with pytest.raises(ConfigurationError, match="delimiter"):
        DataSource.from_config({"path": "a.csv", "delimiter": ":"})
    with pytest.raises(ConfigurationError, match="encoding"):
        DataSource.from_config({"path": "a.csv", "encoding": "klingon"})
    with pytest.raises(ConfigurationError, match="CSV sources only"):
        DataSource.from_config({"path": "a.parquet", "delimiter": ";"})
    with pytest.raises(ConfigurationError, match="kind"):
        DataSource.from_config({"path": "rows.txt"})
    with pytest.raises(ConfigurationError, match="needs 'url' and 'table'"):
        DataSource.from_config({"kind": "sql", "url": "sqlite://"})
    with pytest.raises(ConfigurationError, match="must be a string"):
        DataSource.from_config({"path": 3})


def test_a_spark_location_without_a_scheme_is_relative_to_the_config(tmp_path: Path) -> None:
    """As a file's path is: Spark would otherwise read it from the node's working
    directory. URLs with a scheme and absolute paths are kept as written."""
    def url(location: str) -> str | None:
        return DataSource.from_config({"url": location, "format": "parquet"},
                                      base_dir=tmp_path).url

    assert url("lake/rows.parquet") == str(tmp_path / "lake/rows.parquet")
    for kept in ("s3a://bucket/rows", "hdfs:///registry/rows", "file:///data/rows",
                 "/data/rows.parquet"):
        assert url(kept) == kept
    assert DataSource.from_config({"url": "lake", "format": "csv"}).url == "lake"


def test_describe_hides_passwords() -> None:
    source = DataSource("sql", url="postgresql://user:hunter2@db.example/clinic", table="rows")
    assert "hunter2" not in source.describe() and "db.example" in source.describe()


def test_load_all_concatenates(tmp_path: Path) -> None:
    first = _csv(tmp_path, "age\n1\n", "a.csv")
    second = _csv(tmp_path, "age,sex\n2,F\n", "b.csv")
    df = load_all([DataSource("csv", path=first, dataset="a"), DataSource("csv", path=second,
                                                                          dataset="b")])
    assert df["age"].tolist() == ["1", "2"] and df["dataset"].tolist() == ["a", "b"]
    assert pd.isna(df["sex"].iloc[0])
    assert load_all([]).empty


def test_peer_csvs_load() -> None:
    files = sorted(PEER.glob("data/*/*.csv")) if PEER.is_dir() else []
    if not files:
        pytest.skip(f"MIP reference data not found at {PEER} (../shared/peer/exareme2)")
    total = sum(len(DataSource("csv", path=path).load()) for path in files)
    assert total > 3000


# --- what spreadsheets write: separators and encodings -----------------------------------


@pytest.mark.parametrize(("content", "message"), [
    (b"age;sex;dataset\n50;F;a\n", "holds 2 semicolons and no commas, so its fields "
                                           "seem separated by ';'.*\"delimiter\": \";\""),
    (b"age\tsex\n50\tF\n", "holds 1 tab and no commas"),
    (b"age|sex\n50|F\n", "separated by '|'"),
    ("age,sex\n50,F\n".encode("utf-16"), "is UTF-16 text .*\"encoding\": \"utf-16\""),
    (b"PK\x03\x04\x14\x00\x06\x00", "is a ZIP archive \\(an Excel workbook\\?\\)"),
    (("age,name\n" + "1,a\n" * 500 + "2,Ren\xe9e\n").encode("cp1252"),
     "not UTF-8 text: line 502 holds the byte 0xe9 \\('é' in Windows-1252"),
])
def test_spreadsheet_mistakes_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    """A semicolon CSV read with commas would be one unknown column, and pass as a file whose
    every variable is missing; each of these is refused with what to do instead."""
    path = _csv(tmp_path, content, "export.csv")
    with pytest.raises(LocalDataError, match=message) as info:
        DataSource("csv", path=path).load()
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_declared_delimiter_and_encoding_are_read(tmp_path: Path) -> None:
    semicolons = _csv(tmp_path, "age;name;dataset\n50;Renée;a\n".encode("cp1252"), "eu.csv")
    rows = DataSource.from_config({"path": str(semicolons), "delimiter": ";",
                                   "encoding": "cp1252"}).load()
    assert rows.to_dict("records") == [{"age": "50", "name": "Renée", "dataset": "a"}]
    tabs = _csv(tmp_path, "age\tname\n50\tZoë\n51\n".encode("utf-16"), "tabs.csv")
    with pytest.raises(LocalDataError, match="line 3 has 1 field"):
        DataSource("csv", path=tabs, delimiter="\t", encoding="utf-16").load()
