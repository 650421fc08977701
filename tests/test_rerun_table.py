"""The code rows of docs/reproducibility.md's "What re-runs when": an edit in each code folder changes exactly
the stages the table names (``dvc status`` in a copy of the session's trained project; nothing trains)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, dvc

pytestmark = pytest.mark.slow  # the trained project

DATA = {"download", "parse", "split"}
TRAINERS = {"train@resnet-0", "train@heatmap-0", "train_cnn_adam@0", "train_cnn_sgd@0"}
DOWNSTREAM = {"evaluate", "submit"}
#: The table's first cell -> (a file of it to edit, the stages whose deps that edit changes).
CODE_ROWS = {
    "a model's code, `fkd/models/<name>/` (its params schema too)":
        ("fkd/models/cnn/params.py", {"train_cnn_adam@0", "train_cnn_sgd@0"} | DOWNSTREAM),
    "`fkd/core/`, the code every stage runs": ("fkd/core/keypoints.py", DATA | TRAINERS | DOWNSTREAM),
    "`fkd/sources/`, the download": ("fkd/sources/synthetic.py", {"download", "submit"}),
    "`fkd/nn/`, the torch and Keras code the models share": ("fkd/nn/torch_train.py", TRAINERS | DOWNSTREAM),
    "`fkd/evaluation/`": ("fkd/evaluation/plots.py", DOWNSTREAM),
}


def table_rows() -> dict[str, str]:
    text = (ROOT / "docs/reproducibility.md").read_text()
    section = text.split("## What re-runs when", 1)[1].split("\n## ", 1)[0]
    return {cells[0]: cells[1] for line in section.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


def test_every_code_row_is_in_the_table():
    rows = table_rows()
    assert set(CODE_ROWS) <= set(rows), sorted(rows)


@pytest.mark.parametrize("row", CODE_ROWS)
def test_an_edit_in_a_code_folder_changes_the_stages_its_row_names(row, trained_copy):
    path, expected = CODE_ROWS[row]
    assert dvc("status", "--json", cwd=trained_copy).stdout.strip() == "{}"
    with (trained_copy / path).open("a") as f:
        f.write("\n# an edit\n")
    changed = set(json.loads(dvc("status", "--json", cwd=trained_copy).stdout))
    assert changed == expected, f"editing {path}: {sorted(changed)}"
