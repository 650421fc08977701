"""One header check for Kaggle's CSVs (fkd.core.data.check_header): the download stage and the parser say the same."""
from __future__ import annotations

import pytest

from fkd.core.data import DataError, check_header, parse_training_csv
from fkd.sources.download import check_raw_dir


@pytest.mark.parametrize("found,problem", [
    (["b", "a", "c"], "columns are out of order: column 1 is 'b', expected 'a'"),
    (["a", "b", "c", "b"], "column 4 'b' repeats an earlier one"),
    (["a", "x", "c"], "missing column 'b'; unexpected column 'x'"),
    (["a", "b", "c", "d"], "unexpected column 'd'"),
])
def test_check_header_names_the_first_difference(found, problem):
    with pytest.raises(DataError) as err:
        check_header("f.csv", found, ["a", "b", "c"])
    assert str(err.value) == f"f.csv: row 0 (header): {problem}"


def test_download_and_parser_report_a_swapped_header_alike(tmp_path):
    from fkd.sources.synthetic import write_dataset

    write_dataset(tmp_path, n_train=6, n_test=2, partial_fraction=0.5, seed=1)
    path = tmp_path / "training.csv"
    head, rest = path.read_text().split("\n", 1)
    cols = head.split(",")
    path.write_text(",".join([cols[1], cols[0], *cols[2:]]) + "\n" + rest)
    expected = f"{path}: row 0 (header): columns are out of order: column 1 is 'left_eye_center_y', expected 'left_eye_center_x'"
    with pytest.raises(DataError) as parsed:
        parse_training_csv(path)
    with pytest.raises(DataError) as checked:
        check_raw_dir(tmp_path)
    assert str(parsed.value) == str(checked.value) == expected
