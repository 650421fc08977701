"""The docs cannot go stale: every generated table equals what ``python -m benchmarks.report`` writes from its
source now, every relative link points at a file (and heading) that exists, and the README stays short."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from fkd.core.cli import StageError
from tests.conftest import ROOT, project_env

DOC_FILES = report.doc_files(ROOT)
SETUP = "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && dvc repro"
TEST = ". .venv/bin/activate && pytest"


def _shallow() -> bool:
    return report.git(ROOT, "rev-parse", "--is-shallow-repository") == "true"


def _without_sources(text: str) -> str:
    return re.sub(r"^<sub>From .*</sub>$", "", text, flags=re.M)


@pytest.fixture(scope="module")
def committed() -> Path:
    """HEAD's tree: the docs describe the committed metrics, not the ones a local `dvc repro` has just written
    (on another CPU kind those differ in the last digits; `python -m benchmarks.report --check` judges the working tree)."""
    with report.committed_tree(ROOT) as tree:
        yield tree


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_generated_tables_match_the_committed_sources(path, committed):
    text = path.read_text()
    expected = report.render_text(text, committed, path.name, committed / path.parent.relative_to(ROOT))
    if _shallow():  # a shallow clone cannot name the metrics' commit: compare the tables only
        text, expected = _without_sources(text), _without_sources(expected)
    assert text == expected, (f"{path.name} is stale against the committed metrics: commit them, run "
                              "`python -m benchmarks.report` and commit the result")


def test_the_docs_have_generated_tables():
    kinds = {m["kind"] for p in DOC_FILES for m in report.OPEN.finditer(p.read_text())}
    assert {"summary", "evaluate", "train", "split", "runs", "bench"} <= kinds
    assert "report:summary . -->" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- links


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code, where nothing is a link or a heading."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", _prose(path.read_text()), flags=re.M)}


def test_every_relative_link_points_at_something_that_exists():
    broken = []
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(path.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, broken


def test_readme_is_a_short_guide_with_the_ci_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    lines = readme.splitlines()
    assert SETUP in lines and TEST in lines  # byte-identical: CI runs the README's test command
    assert 'pytest -m "not slow"' in readme
    for page in ("models", "cross-validation", "data", "sharing", "ci-gate", "predict", "reproducibility", "benchmarks", "results"):
        assert f"(docs/{page}.md)" in readme


# ---------------------------------------------------------------- the report itself, on a tiny repo


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=project_env())


def _metrics(base: Path, rmse: float) -> None:
    for name, value in {"resnet": rmse, "resnet_tta": rmse - 0.1, "ensemble": 0.8, "ensemble_tta": 0.75, "mean_shape": 4.2}.items():
        path = base / "metrics/evaluate" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rmse": value, "pck_05": 0.5}))
    (base / "metrics/split.json").write_text(json.dumps({"label_offset_x": 0.0, "duplicate_groups": 2}))
    train = base / "metrics/train_resnet/0/metrics.json"
    train.parent.mkdir(parents=True, exist_ok=True)
    train.write_text(json.dumps({"best_val_rmse": rmse, "best_epoch": 3, "device": "cpu"}))


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repo with metrics, params.yaml and a README holding a summary and a runs region, committed."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    _metrics(root, 1.25)
    (root / "params.yaml").write_text("data: {}\n")
    (root / "README.md").write_text("# x\n\n<!-- report:summary . -->\n<!-- /report:summary -->\n")
    (root / "docs/results.md").write_text("<!-- report:runs docs/results -->\nold\n<!-- /report:runs -->\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "metrics")
    return root


def test_a_changed_metric_makes_its_table_stale_until_the_report_runs(repo):
    assert report.report(repo) == ["README.md", "docs/results.md"]
    readme = (repo / "README.md").read_text()
    commit = report.git(repo, "rev-parse", "--short", "HEAD")
    assert f"commit {commit}" in readme and "| `resnet` | 1.250 | 1.150 | 0.500 |" in readme
    assert "No run saved yet." in (repo / "docs/results.md").read_text()
    assert report.report(repo, check=True) == []

    _metrics(repo, 1.5)  # a re-run changed the metric: uncommitted, then committed
    assert report.report(repo, check=True) == ["README.md"]
    assert (repo / "README.md").read_text() == readme  # --check writes nothing
    report.report(repo)
    assert "uncommitted changes" in (repo / "README.md").read_text()
    _git(repo, "commit", "-qam", "new metrics")
    assert report.report(repo, check=True) == ["README.md"]
    report.report(repo)
    assert "| `resnet` | 1.500 | 1.400 |" in (repo / "README.md").read_text()


def test_a_local_rerun_leaves_the_committed_docs_matching_the_committed_metrics(repo):
    report.report(repo)
    _git(repo, "commit", "-qam", "docs")
    _metrics(repo, 1.5)  # `dvc repro` on another CPU kind: this machine's metrics, uncommitted
    readme = (repo / "README.md").read_text()
    assert report.report(repo, check=True) == ["README.md"]  # the working tree's check sees the new numbers
    with report.committed_tree(repo) as tree:
        assert tree != repo and report.render_text(readme, tree, "README.md") == readme
        assert json.loads((tree / "metrics/evaluate/resnet.json").read_text())["rmse"] == 1.25
    assert not tree.exists() and report.git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_committed_tree_outside_git_is_the_folder_itself(tmp_path):
    with report.committed_tree(tmp_path) as tree:
        assert tree == tmp_path


def test_check_exits_1_naming_the_stale_file(repo, monkeypatch, capsys):
    monkeypatch.setattr(report, "ROOT", repo)
    with pytest.raises(SystemExit) as exit_:
        report.main(["--check"])
    assert exit_.value.code == 1 and "README.md: stale" in capsys.readouterr().out


def test_save_run_copies_the_metrics_and_records_where_they_came_from(repo):
    dest = report.save_run("real", repo, probe=123.4, command="dvc exp run -n real -S data.source=local", wall_seconds=61.0)
    assert dest == repo / "docs/results/real"
    for name in ("metrics/evaluate/resnet.json", "metrics/split.json", "metrics/train_resnet/0/metrics.json", "params.yaml"):
        assert (dest / name).read_bytes() == (repo / name).read_bytes()
    run = json.loads((dest / "run.json").read_text())
    assert run["probe_img_s"] == 123.4 and run["wall_seconds"] == 61.0 and run["command"].startswith("dvc exp run")
    assert run["commit"] == report.git(repo, "rev-parse", "--short", "HEAD")

    (repo / "docs/results.md").write_text("<!-- report:runs docs/results -->\n<!-- /report:runs -->\n"
                                          "<!-- report:evaluate docs/results/real -->\n<!-- /report:evaluate -->\n")
    report.report(repo)
    text = (repo / "docs/results.md").read_text()
    assert "| [`real`](results/real/) |" in text and "123 img/s" in text and "| 61 | – | 0.750 |" in text  # no heatmap_tta.json
    assert "run `real` (docs/results/real/run.json)" in text

    with pytest.raises(StageError, match="already exists"):
        report.save_run("real", repo, 1.0, "dvc repro", None)
    with pytest.raises(StageError, match="letters, digits"):
        report.save_run("../x", repo, 1.0, "dvc repro", None)


def test_save_run_without_metrics_writes_nothing(tmp_path):
    with pytest.raises(StageError, match="no metrics in the workspace"):
        report.save_run("empty", tmp_path, None, "dvc repro", None)
    assert not (tmp_path / "docs/results/empty").exists()


def test_probe_is_given_measured_or_not_measured(tmp_path):
    assert report.machine_probe(tmp_path / "repo", 99.0) == 99.0
    assert report.machine_probe(tmp_path / "repo") == report.NOT_MEASURED  # no ../shared/tools/cpu_probe.py
    (tmp_path / "shared/tools").mkdir(parents=True)
    (tmp_path / "shared/tools/cpu_probe.py").write_text("print('probe_img_s=217.5')\n")
    assert report.machine_probe(tmp_path / "repo") == 217.5


def test_region_errors_name_the_file_and_line(repo):
    with pytest.raises(StageError, match=r"README.md: line 2: unknown report kind 'nope'"):
        report.render_text("x\n<!-- report:nope . -->\n<!-- /report:nope -->\n", repo, "README.md")
    with pytest.raises(StageError, match=r"line 1: .* has no closing <!-- /report:summary -->"):
        report.render_text("<!-- report:summary . -->\n", repo, "README.md")
    with pytest.raises(StageError, match=r"line 1: .*docs/results/gone/metrics/evaluate/\*\.json: no such files"):
        report.render_text("<!-- report:evaluate docs/results/gone -->\n<!-- /report:evaluate -->\n", repo, "README.md")
    (repo / "metrics/split.json").write_text("{not json")
    with pytest.raises(StageError, match=r"split.json: not readable JSON"):
        report.render_text("<!-- report:split . -->\n<!-- /report:split -->\n", repo, "README.md")


def test_a_benchmark_json_becomes_a_table(tmp_path, monkeypatch):
    from benchmarks import parse_speed

    monkeypatch.setattr(report, "machine_probe", lambda root, given=None: 50.0)
    out = tmp_path / "docs/results/benchmarks/parse_speed.json"
    monkeypatch.setattr(sys, "argv", ["parse_speed", "--rows", "40", "--repeat", "1", "--json", str(out)])
    parse_speed.main()
    data = json.loads(out.read_text())
    assert data["benchmark"] == "parse_speed" and data["probe_img_s"] == 50.0 and data["command"].startswith("python -m benchmarks.parse_speed --rows 40")
    assert [r["reader"] for r in data["rows"]] == ["fkd.core.data.parse_training_csv", "per-row np.fromstring loop"]
    text = report.render_text("<!-- report:bench docs/results/benchmarks/parse_speed.json -->\n<!-- /report:bench -->\n", tmp_path)
    assert "| reader | rows | MB | seconds | speed_up |" in text and "| per-row np.fromstring loop | 40 |" in text
    assert "machine probe 50 img/s" in text

    out.write_text(json.dumps({"rows": []}))
    with pytest.raises(StageError, match="'rows' must be a non-empty list"):
        report.render_text("<!-- report:bench docs/results/benchmarks/parse_speed.json -->\n<!-- /report:bench -->\n", tmp_path)


@pytest.mark.parametrize("seconds, text", [(981.6, "982 s"), (61, "61 s"), (None, report.NOT_MEASURED),
                                           ("abc", "abc s"), (float("nan"), "nan s"), (True, "yes s")])
def test_wall_seconds_print_whole_and_a_damaged_value_does_not_stop_the_report(seconds, text):
    assert report.wall_text(seconds, " s") == text
