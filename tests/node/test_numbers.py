"""One float parser (stats/numbers.py): validation, filters and DataModel.infer read every
number written as text alike, and exactly."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from node.validation import check_valid, validate
from stats.datamodel import DataModel
from stats.numbers import parse_numbers


def test_seventeen_digits_give_back_the_float_they_were_written_from() -> None:
    """pandas' default CSV parser misses about a quarter of these by one unit."""
    values = np.random.default_rng(0).normal(50, 10, 20_000)
    text = pd.Series([f"{v:.17g}" for v in values], dtype=object)
    parsed, bad = parse_numbers(text)
    assert not bad.any() and np.array_equal(parsed, values)
    assert np.array_equal(parsed, [float(t) for t in text])


def test_bad_cells_do_not_change_how_the_others_read() -> None:
    """A column with a bad cell is parsed cell by cell around it by the same parser."""
    cells = ["1e-9", "+1.5", ".5", "5.", "-0", "1E+05", "0.10000000000000001", "abc", "1,5",
             " 2", "nan", "inf", None, "12x", ""]
    parsed, bad = parse_numbers(pd.Series(cells, dtype=object))
    good = [1e-9, 1.5, 0.5, 5.0, -0.0, 1e5, 0.1]
    assert list(parsed[:7]) == good and not bad[:7].any()
    assert list(bad[7:]) == [True, True, True, True, False, False, True, True]
    assert parsed[11] == np.inf and np.isnan(parsed[10])  # callers refuse non-finite values
    clean, _ = parse_numbers(pd.Series(cells[:7], dtype=object))
    assert list(clean) == good


def test_typed_and_object_columns() -> None:
    assert list(parse_numbers(pd.Series([1, 2], dtype="Int64"))[0]) == [1.0, 2.0]
    values, bad = parse_numbers(pd.Series([True, False]))
    assert bad.all()  # booleans are not numbers
    values, bad = parse_numbers(pd.Series([Decimal("1.25"), 3, 2.5, "4.5", "x", True],
                                          dtype=object))
    assert list(values[:4]) == [1.25, 3.0, 2.5, 4.5] and list(bad) == [False] * 4 + [True] * 2


@pytest.mark.parametrize("written", ["%.17g", "%.6f", None])
def test_inferred_bounds_are_what_validation_reads(written: str | None, tmp_path) -> None:  # noqa: ANN001
    """A model inferred from a CSV as nodes read it (text) holds every row: the 17-digit
    extremes were "above the maximum" with two parsers."""
    from node.datasource import DataSource

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 5000), "k": rng.integers(-5, 5, 5000),
                          "dataset": "d"})
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False, float_format=written)
    rows = DataSource("csv", path=path).load()
    model = DataModel.infer(rows)
    assert model.variable("x").sql_type == "real" and model.variable("k").sql_type == "int"
    assert model.variable("x").max == max(float(v) for v in rows["x"])
    check_valid(rows, model)
    assert validate(rows, model) == []


def test_inference_from_typed_and_text_frames_together() -> None:
    """local_federation may mix a DataFrame (typed) and a file (text) in one model."""
    typed = pd.DataFrame({"x": [1.5, 2.0], "n": [1, 2], "sex": ["F", "M"], "dataset": "a"})
    text = pd.DataFrame({"x": ["3.25", ""], "n": ["7", "-2"], "sex": ["M", None],
                         "dataset": "b"}, dtype=object)
    model = DataModel.infer(pd.concat([typed, text], ignore_index=True))
    assert (model.variable("x").sql_type, model.variable("x").min, model.variable("x").max) \
        == ("real", 1.5, 3.25)
    assert (model.variable("n").sql_type, model.variable("n").min) == ("int", -2.0)
    assert model.variable("sex").enumerations == ("F", "M")
