"""Where a node's rows live, and loading them into a pandas DataFrame.

A node reads its rows from a CSV file, a Parquet file or a table of any SQL database
SQLAlchemy can reach. Loading does not judge the values (that is :mod:`node.validation`'s
job): CSV cells are read as text exactly as written, only empty cells are missing, so that
validation can report what the file really says. Any failure to read becomes one readable
:class:`~stats.datamodel.LocalDataError` that names the source, with the cause chained for
the operator's logs.

CSV files are comma-separated UTF-8 unless the source says otherwise (``"delimiter"``:
one of ``, ; tab |``; ``"encoding"``: any Python codec, e.g. ``cp1252``). The mistakes
spreadsheets make are recognised and named rather than read as something else: a file
separated by semicolons, tabs or bars (read as commas it would be one column, which
validation would take for a file with every variable missing), UTF-16 text, an Excel
workbook renamed ``.csv``, and text in another encoding (the line and byte are given).
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from protocol.errors import ConfigurationError
from stats.datamodel import DATASET, LocalDataError
from stats.suggest import check_keys

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["DataSource", "Kind", "load_all"]

Kind = Literal["csv", "parquet", "sql", "spark"]
KINDS: tuple[Kind, ...] = ("csv", "parquet", "sql", "spark")
_CONFIG_KEYS = frozenset({"kind", "path", "url", "table", "schema", "dataset", "delimiter",
                          "encoding", "format", "master"})
#: the formats a Spark source may be read in (Spark's own readers)
SPARK_FORMATS = ("parquet", "csv", "orc", "json")
#: the field separators a CSV source may declare, and that a header is checked for
DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars"}
_SUFFIX_KIND: dict[str, Kind] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: a URL's scheme (s3a:, hdfs:, file:, abfss:, ...)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_MAX_HEADER_FIELD = 1 << 20
_MAX_FIELD = 1 << 30


@dataclass(frozen=True)
class DataSource:
    """One source of rows: a CSV file, a Parquet file, a SQL table, or rows Spark reads (a
    data-lake location in ``url`` with its ``format``, or a catalog ``table``; ``master`` the
    Spark master, else Spark's own configuration, see :mod:`node.sql.spark_rows`).

    ``dataset`` names the dataset of rows that do not say it themselves: a file without a
    ``dataset`` column gets one holding this name, and empty cells of an existing one are
    filled with it.
    """

    kind: Kind
    path: Path | None = None
    url: str | None = None
    table: str | None = None
    schema: str | None = None
    dataset: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    format: str | None = None
    master: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigurationError(f"data source kind {self.kind!r} is not csv, parquet, sql "
                                     "or spark")
        if self.kind != "spark" and (self.format, self.master) != (None, None):
            raise ConfigurationError("'format' and 'master' apply to spark sources only")
        if self.kind == "spark":
            if (self.url is None) == (self.table is None) or self.path is not None:
                raise ConfigurationError("a spark data source needs 'url' (a location Spark "
                                         "reads, with 'format') or 'table' (a table of Spark's "
                                         "catalog), one of them, and no 'path'")
            if self.table is not None and self.format is not None:
                raise ConfigurationError("a spark 'table' has no 'format'")
            if self.url is not None and (self.format or "parquet") not in SPARK_FORMATS:
                raise ConfigurationError(f"a spark 'format' is one of {list(SPARK_FORMATS)}")
        elif self.kind == "sql":
            if not self.url or not self.table or self.path is not None:
                raise ConfigurationError("a sql data source needs 'url' and 'table' (and no 'path')")
        elif self.path is None or self.url is not None or self.table is not None:
            raise ConfigurationError(f"a {self.kind} data source needs 'path' (and no 'url'/'table')")
        if self.path is not None and not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        if self.dataset is not None and (not isinstance(self.dataset, str) or not self.dataset):
            raise ConfigurationError("a data source's 'dataset' must be a non-empty string")
        if self.kind != "csv" and (self.delimiter, self.encoding) != (",", "utf-8"):
            raise ConfigurationError("'delimiter' and 'encoding' apply to CSV sources only")
        if self.delimiter not in DELIMITERS:
            raise ConfigurationError("a CSV 'delimiter' is one of ',', ';', '\\t' (tab) or '|'")
        try:
            codecs.lookup(self.encoding)
        except (LookupError, TypeError) as exc:
            raise ConfigurationError(f"unknown 'encoding' {self.encoding!r} (e.g. utf-8, "
                                     "cp1252, latin-1, utf-16)") from exc

    @classmethod
    def from_config(cls, config: Mapping[str, Any], base_dir: Path | None = None) -> DataSource:
        """Build from a config dict; a relative ``path`` is taken relative to ``base_dir``.

        ``kind`` may be left out when the path ends in ``.csv``/``.parquet``/``.pq`` or a
        ``url`` is given. SQL URLs are used verbatim.
        """
        if not isinstance(config, Mapping):
            raise ConfigurationError("a data source must be a JSON object")
        check_keys(config, _CONFIG_KEYS, "data source")
        for key in _CONFIG_KEYS:
            if config.get(key) is not None and not isinstance(config[key], str):
                raise ConfigurationError(f"data source {key!r} must be a string")
        path = Path(config["path"]) if config.get("path") else None
        if path is not None and base_dir is not None and not path.is_absolute():
            path = base_dir / path
        kind = config.get("kind")
        if kind is None:
            if config.get("format") or config.get("master"):
                kind = "spark"
            elif config.get("url"):
                kind = "sql"
            elif path is not None and path.suffix.lower() in _SUFFIX_KIND:
                kind = _SUFFIX_KIND[path.suffix.lower()]
            else:
                raise ConfigurationError("data source 'kind' is missing (csv, parquet, sql or "
                                         "spark)")
        url = config.get("url")
        if kind == "sql" and url and url.partition("://")[2].split("/", 1)[0].count("@") > 1:
            # a driver would read the rest of the password as the host, and name it
            raise ConfigurationError("a database URL's password holds '@': percent-encode it "
                                     "as %40 (or give the password in ~/.pgpass or "
                                     "PGPASSFILE, not in the URL)")
        if kind == "spark" and url and base_dir is not None and not _SCHEME.match(url) \
                and not Path(url).is_absolute():
            # a data lake path with no scheme is a local one: relative to the config, as a
            # file's path is (Spark would take it from the node's working directory)
            url = str(base_dir / url)
        return cls(
            kind=cast(Kind, kind),
            path=path,
            url=url,
            table=config.get("table"),
            schema=config.get("schema"),
            dataset=config.get("dataset"),
            delimiter=config.get("delimiter") or ",",
            encoding=config.get("encoding") or "utf-8",
            format=config.get("format"),
            master=config.get("master"),
        )

    def describe(self) -> str:
        """A human name for messages; a database password is never shown."""
        if self.kind == "spark":
            return (f"Spark table {self.table}" if self.table is not None else
                    f"Spark {self.format or 'parquet'} data at {_without_secret(self.url)}")
        if self.kind != "sql":
            return f"{'CSV' if self.kind == 'csv' else 'Parquet'} file {self.path}"
        # SQLAlchemy is imported only for SQL sources (0.15 s of every node's start-up)
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(cast(str, self.url))
        except (ArgumentError, ValueError):
            where = "(an invalid database URL)"
        else:
            # driver, host, port and database only: never the user, the password, nor the
            # query (libpq takes ?password=...); a host holding '@' holds part of a password
            # that was not percent-encoded
            host = (url.host or "").rsplit("@", 1)[-1]
            port = f":{url.port}" if url.port else ""
            where = f"{url.drivername}://{host}{port}/{url.database or ''}"
        table = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"table {table} of {where}"

    def load(self) -> pd.DataFrame:
        """Read all rows; :class:`LocalDataError` if the source cannot be read."""
        if self.kind == "csv":
            df = _read_csv(cast(Path, self.path), _Dialect(self.delimiter, self.encoding))
        elif self.kind == "parquet":
            df = _read_parquet(cast(Path, self.path))
        elif self.kind == "spark":
            from node.sql.spark_rows import read_frame  # pyspark only for spark sources

            df = read_frame(self)
        else:
            df = self._read_sql()
        return self._with_dataset(df)

    def _with_dataset(self, df: pd.DataFrame) -> pd.DataFrame:
        if self.dataset is None:
            return df
        if DATASET not in df.columns:
            return df.assign(**{DATASET: pd.Series(self.dataset, index=df.index, dtype="str")})
        col = df[DATASET]
        # explicit masks: pandas 2's astype(str) would turn a missing cell into 'nan'
        values = col.to_numpy(dtype=object, na_value="")
        empty = np.asarray(values == "", dtype=bool)
        if empty.any():
            values = np.array([str(v) for v in values], dtype=object)
            values[empty] = self.dataset
            df = df.copy()
            df[DATASET] = pd.Series(values, index=df.index, dtype="str")
        return df

    def _read_sql(self) -> pd.DataFrame:
        from sqlalchemy import MetaData, Table, create_engine, select
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import (
            ArgumentError,
            NoSuchModuleError,
            NoSuchTableError,
            SQLAlchemyError,
        )

        what = self.describe()
        try:
            url = make_url(cast(str, self.url))
        except ArgumentError as exc:
            raise LocalDataError(f"cannot read {what}: the database URL is not valid") from exc
        _refuse_missing_sqlite(url, what)
        try:
            engine = create_engine(url)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise LocalDataError(
                f"cannot read {what}: no database driver for {url.drivername!r}"
            ) from exc
        try:
            with engine.connect() as conn:
                table = Table(cast(str, self.table), MetaData(), schema=self.schema,
                              autoload_with=conn)
                return pd.read_sql(select(table), conn)
        except NoSuchTableError as exc:
            raise LocalDataError(f"cannot read {what}: the table does not exist") from exc
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise LocalDataError(
                f"cannot read {what}: the database refused or failed ({type(exc).__name__})"
            ) from exc
        finally:
            engine.dispose()


def _without_secret(url: str | None) -> str:
    """A location with any user:password@ part left out (object-store URLs may carry one)."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return text


def load_all(sources: Iterable[DataSource]) -> pd.DataFrame:
    """All rows of several sources, one after the other (columns united, missing ones empty)."""
    frames = [source.load() for source in sources]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)


# --- readers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dialect:
    delimiter: str = ","
    encoding: str = "utf-8"

    @property
    def codec(self) -> str:
        """UTF-8 with or without a byte-order mark, as spreadsheets write it."""
        return "utf-8-sig" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding


def checked_header(path: Path, what: str, dialect: _Dialect) -> list[str]:
    """The CSV file's header: every column named, and no name twice (both row stores)."""
    header = _read_header(path, what, dialect)
    seen: set[str] = set()
    for i, name in enumerate(header, start=1):
        if not name.strip():
            raise LocalDataError(f"{what}: column {i} of the header has no name")
        if name in seen:
            raise LocalDataError(f"{what}: column {name!r} appears twice in the header")
        seen.add(name)
    return header


def _read_csv(path: Path, dialect: _Dialect = _Dialect()) -> pd.DataFrame:
    what = f"CSV file {path}"
    header = checked_header(path, what, dialect)
    try:
        # the C engine with dtype=str keeps every cell as written ('061' stays '061') and
        # only empty cells missing (NaN), under pandas 2 (object) and 3 (str) alike
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                         sep=dialect.delimiter, encoding=dialect.codec)
    except (pd.errors.ParserError, ValueError) as exc:
        if isinstance(exc, UnicodeError):
            raise LocalDataError(_encoding_problem(path, what, dialect)) from exc
        bad = _find_bad_row(path, len(header), dialect)
        raise LocalDataError(
            f"{what} is malformed: {bad or 'a row cannot be parsed (bad quoting or field count)'}"
        ) from exc
    except OSError as exc:
        raise LocalDataError(f"cannot read {what}: {exc.strerror or type(exc).__name__}") from exc
    _check_row_widths(df, path, what, len(header), dialect)
    return df


def _check_row_widths(df: pd.DataFrame, path: Path, what: str, width: int,
                      dialect: _Dialect) -> None:
    """Refuse rows whose field count differs from the header's, which the C engine accepts.

    It raises only for a long row after the first; a long first row silently turns the
    first column into the index, and a short row is silently padded with missing cells
    (in every pandas version). A short row leaves its last column missing, so the file is
    scanned only when the index is not the plain row number or the last column has a
    missing cell.
    """
    shifted = not isinstance(df.index, pd.RangeIndex) or len(df.columns) != width
    if not shifted and (width == 1 or not bool(df.iloc[:, -1].isna().any())):
        return
    bad = _find_bad_row(path, width, dialect)
    if bad is not None:
        raise LocalDataError(f"{what} is malformed: {bad}")
    if shifted:
        raise LocalDataError(f"{what} is malformed: its rows do not match the header")


#: the first bytes of files that are not text in the declared encoding
_SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive (an Excel workbook?), not CSV text: export it as CSV",
    b"\xd0\xcf\x11\xe0": "an old Excel or Office file, not CSV text: export it as CSV",
    codecs.BOM_UTF16_LE: "UTF-16 text (spreadsheets' \"Unicode text\"): save it as CSV UTF-8 "
                         "or set \"encoding\": \"utf-16\" in the data source",
    codecs.BOM_UTF16_BE: "UTF-16 text (spreadsheets' \"Unicode text\"): save it as CSV UTF-8 "
                         "or set \"encoding\": \"utf-16\" in the data source",
}


def _read_header(path: Path, what: str, dialect: _Dialect = _Dialect()) -> list[str]:
    try:
        with path.open("rb") as raw:
            start = raw.read(4)
        if dialect.codec == "utf-8-sig" or not start.startswith((codecs.BOM_UTF16_LE,
                                                                 codecs.BOM_UTF16_BE)):
            for signature, text in _SIGNATURES.items():
                if start.startswith(signature):
                    raise LocalDataError(f"{what} is {text}")
        with path.open(encoding=dialect.codec, newline="") as fh:
            reader = csv.reader(fh, delimiter=dialect.delimiter)
            old_limit = csv.field_size_limit(_MAX_HEADER_FIELD)
            try:
                header = next(reader, None)
            finally:
                csv.field_size_limit(old_limit)
    except FileNotFoundError as exc:
        raise LocalDataError(f"{what} does not exist") from exc
    except IsADirectoryError as exc:
        raise LocalDataError(f"{what} is a directory, not a file") from exc
    except UnicodeError as exc:
        raise LocalDataError(_encoding_problem(path, what, dialect)) from exc
    except csv.Error as exc:
        raise LocalDataError(f"{what} is not a CSV file (its header cannot be read)") from exc
    except OSError as exc:
        raise LocalDataError(f"cannot read {what}: {exc.strerror or type(exc).__name__}") from exc
    if not header:
        raise LocalDataError(f"{what} is empty (no header line)")
    if "\x00" in "".join(header):
        raise LocalDataError(f"{what} is not a CSV file (it holds binary data)")
    _check_delimiter(header, what, dialect)
    return header


def _check_delimiter(header: list[str], what: str, dialect: _Dialect) -> None:
    """A header read as one column that holds another separator many times is a file
    separated by that separator: refuse it, rather than serve one unknown column."""
    if len(header) != 1:
        return
    counts = {sep: header[0].count(sep) for sep in DELIMITERS if sep != dialect.delimiter}
    sep, count = max(counts.items(), key=lambda item: item[1])
    if count:
        shown = "\\t" if sep == "\t" else sep
        name = DELIMITERS[sep] if count > 1 else DELIMITERS[sep][:-1]
        raise LocalDataError(
            f"{what} has a single column: its header holds {count} {name} and no "
            f"{DELIMITERS[dialect.delimiter]}, so its fields seem separated by '{shown}'; "
            f"save it with {DELIMITERS[dialect.delimiter]}, or set \"delimiter\": "
            f"\"{shown}\" in the node's data source")


def _encoding_problem(path: Path, what: str, dialect: _Dialect) -> str:
    """Where the file stops being text in its declared encoding, and a guess at why."""
    line, byte = 1, None
    decoder = codecs.getincrementaldecoder(dialect.codec)()
    try:
        with path.open("rb") as raw:
            for chunk in iter(lambda: raw.read(1 << 16), b""):
                for piece in chunk.splitlines(keepends=True):
                    try:
                        decoder.decode(piece)
                    except UnicodeDecodeError as exc:
                        byte = piece[exc.start:exc.start + 1]
                        raise
                    line += piece.endswith((b"\n", b"\r"))
    except UnicodeDecodeError:
        pass
    except OSError:
        return f"{what} is not {dialect.encoding} text"
    if byte is None:
        return f"{what} is not {dialect.encoding} text"
    where = f"line {line} holds the byte 0x{byte.hex()}"
    if dialect.codec == "utf-8-sig":
        try:
            guess = byte.decode("cp1252")
        except UnicodeDecodeError:
            return f"{what} is not UTF-8 text: {where}; save it as CSV UTF-8"
        return (f"{what} is not UTF-8 text: {where} ({guess!r} in Windows-1252, which "
                "spreadsheets often write); save it as CSV UTF-8, or set \"encoding\": "
                "\"cp1252\" in the data source")
    return f"{what} is not {dialect.encoding} text: {where}"


def _find_bad_row(path: Path, width: int, dialect: _Dialect = _Dialect()) -> str | None:
    """Name the first line whose field count differs from the header's (None if none).

    Blank (or whitespace-only) lines are skipped, as pandas skips them. Lines are counted
    the way :mod:`csv` counts them (a quoted line break starts a new line); a file without
    quotes is split into lines directly, which is several times faster.
    """
    try:
        with path.open(encoding=dialect.codec, newline="") as fh:
            lines = iter(fh)
            quoted = '"' in next(lines, "")
            if not quoted:
                for number, line in enumerate(lines, start=2):
                    if '"' in line:
                        quoted = True
                        break
                    text = line.rstrip("\r\n")
                    count = text.count(dialect.delimiter) + 1
                    if count != width and text.strip(" \t"):
                        return _bad_row(number, count, width)
        if not quoted:
            return None
        with path.open(encoding=dialect.codec, newline="") as fh:
            reader = csv.reader(fh, delimiter=dialect.delimiter)
            old_limit = csv.field_size_limit(_MAX_FIELD)
            try:
                next(reader, None)
                for fields in reader:
                    if len(fields) != width and not _blank(fields):
                        return _bad_row(reader.line_num, len(fields), width)
            finally:
                csv.field_size_limit(old_limit)
    except (OSError, UnicodeError, csv.Error):
        return None
    return None


def malformed_row(source: DataSource) -> str | None:
    """For a local CSV file an engine could not read: its first row whose field count
    differs from the header's ("line 5 has 10 field(s) where the header has 9"), or None
    (another kind of source, or no such row: the failure was something else)."""
    if source.kind != "csv" or source.path is None:
        return None
    dialect = _Dialect(source.delimiter, source.encoding)
    try:
        width = len(checked_header(Path(source.path), source.describe(), dialect))
    except LocalDataError:
        return None
    return _find_bad_row(Path(source.path), width, dialect)


def _blank(fields: list[str]) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip(" \t"))


def _bad_row(line: int, count: int, width: int) -> str:
    return f"line {line} has {count} field(s) where the header has {width}"


def _read_parquet(path: Path) -> pd.DataFrame:
    what = f"Parquet file {path}"
    if not path.exists():
        raise LocalDataError(f"{what} does not exist")
    if path.is_dir():
        raise LocalDataError(f"{what} is a directory, not a file")
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, ValueError, TypeError, OSError) as exc:
        raise LocalDataError(f"{what} is not a readable Parquet file (corrupt or truncated)") from exc


def _refuse_missing_sqlite(url: URL, what: str) -> None:
    """SQLite silently creates a missing database file: refuse to read one instead."""
    if url.get_backend_name() != "sqlite":
        return
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise LocalDataError(f"cannot read {what}: the database file does not exist")
