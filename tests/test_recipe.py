"""One set of defaults: the quick start and the real-data run use the same recipe, and only the data
differs. params.yaml is the real-data recipe; the drawn-faces set is chosen by ``data.source`` and
sized by ``synthetic.*``, which only the download stage reads. The commands are read where a user reads
them: README.md's "Quick start" and "Real data", and docs/data.md's "Sources"."""
from __future__ import annotations

import re

import pytest
import yaml

from fkd.core.config import load_params
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
DATA_DOC = (ROOT / "docs" / "data.md").read_text()


def _section(title: str, text: str = README) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _settings(command: str) -> list[str]:
    """The keys a ``dvc exp run`` command sets with ``-S``."""
    return re.findall(r"-S\s+'?\+?([A-Za-z_][\w.]*)=", command)


def test_quick_start_is_plain_dvc_repro_on_the_shipped_params():
    block = _section("Quick start").split("```bash\n", 1)[1].split("```", 1)[0]
    assert block.strip().endswith("&& dvc repro"), block
    assert "-S" not in block and "params" not in block


@pytest.mark.parametrize("section", [_section("Real data"), _section("Sources", DATA_DOC)], ids=["README", "docs/data.md"])
def test_real_data_run_changes_only_where_the_data_comes_from(section):
    commands = [line for line in section.splitlines() if line.lstrip().startswith("dvc exp run")]
    assert commands
    for command in commands:
        keys = _settings(command)
        assert keys and all(k.startswith("data.") for k in keys), command


def test_the_drawn_faces_set_is_only_a_data_source():
    p = load_params(ROOT / "params.yaml")
    assert p.data.source == "synthetic"
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    read = {name: {str(key) for key in s.get("do", s).get("params", []) if str(key).split(".")[0] in ("synthetic", "data")}
            for name, s in stages.items()}
    assert {name for name, keys in read.items() if keys - {"data.competition"}} == {"download", "split"}, read
    # past the download only the labels' offset, which split estimates from any source's faces (auto)
    assert read["split"] == {"data.label_offset_x"} and p.data.label_offset_x == "auto"
