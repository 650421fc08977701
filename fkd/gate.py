"""Regression gate: fail when a tracked metric got worse than a baseline by more than its tolerance.

    python -m fkd.gate [--baseline REF|FILE] [--tolerances gate.yaml] [--write-baseline FILE]

Run it from the project root. The workspace's metrics (``dvc metrics show``) are compared with a
baseline: a git ref (default ``HEAD``: the committed metrics, read with ``dvc metrics diff REF``) or a
JSON file ``{metric file: {key: value}}`` (``--write-baseline`` writes one). ``dvc metrics diff`` on
its own never fails and, without a ref, compares HEAD with itself on a clean checkout (dvc #7578),
so the gate always names its baseline and decides from the numbers.

A tracked value counts as new (and passes) only when the baseline has none: its metric file is
absent there, or the file lacks the key. A baseline metric file that is there but cannot be read,
or a baseline value that is not a finite number, stops the gate: nothing can be compared with it.

Exit 0: every tracked metric is within tolerance. Exit 1: one got worse, or is missing, unreadable or
not a finite number in the workspace. Exit 2: the gate could not run (bad gate.yaml, unknown ref,
unreadable baseline, dvc failed).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: metric file -> dotted key (nested JSON keys joined with ".", as dvc shows them) -> value
Metrics = dict[str, dict[str, Any]]

RULE_KEYS = {"files", "keys", "abs", "rel", "better"}


class GateError(RuntimeError):
    """The gate could not run; printed as one line, exit code 2."""


@dataclass(frozen=True)
class Rule:
    """One entry of gate.yaml ``tracked``: metric files (a glob), keys and how much worse they may get."""

    files: str
    keys: tuple[str, ...]
    abs: float
    rel: float
    better: str = "lower"  # lower | higher

    def allowed(self, baseline: float) -> float:
        """How much worse than ``baseline`` a value may be and still pass."""
        return self.abs + self.rel * abs(baseline)

    def worsening(self, baseline: float, value: float) -> float:
        """Positive when ``value`` is worse than ``baseline``."""
        return value - baseline if self.better == "lower" else baseline - value


@dataclass(frozen=True)
class Check:
    """The verdict on one (metric file, key)."""

    path: str
    key: str
    baseline: Any
    value: Any
    allowed: float | None
    status: str  # better | same | ok | new | WORSE | MISSING | INVALID
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status in {"WORSE", "MISSING", "INVALID"}


def load_rules(path: str | Path) -> list[Rule]:
    """Read and check gate.yaml; every problem names the entry."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GateError(f"{path} not found (run from the project root or pass --tolerances)") from None
    except yaml.YAMLError as exc:
        raise GateError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tracked"), list) or not raw["tracked"]:
        raise GateError(f"{path}: expected a top-level 'tracked:' list of rules")
    rules = []
    for i, entry in enumerate(raw["tracked"]):
        where = f"{path}: tracked[{i}]"
        if not isinstance(entry, dict):
            raise GateError(f"{where} must be a mapping")
        unknown = sorted(set(entry) - RULE_KEYS)
        if unknown:
            raise GateError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(RULE_KEYS))})")
        missing = sorted({"files", "keys", "abs", "rel"} - set(entry))
        if missing:
            raise GateError(f"{where}: missing key '{missing[0]}'")
        keys = entry["keys"]
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(entry["files"], str) or not keys or not all(isinstance(k, str) for k in keys):
            raise GateError(f"{where}: 'files' must be a glob and 'keys' a list of metric names")
        for name in ("abs", "rel"):
            value = entry[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise GateError(f"{where}: '{name}' must be a number >= 0, got {value!r}")
        better = entry.get("better", "lower")
        if better not in ("lower", "higher"):
            raise GateError(f"{where}: 'better' must be lower or higher, got {better!r}")
        rules.append(Rule(entry["files"], tuple(keys), float(entry["abs"]), float(entry["rel"]), better))
    return rules


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON -> {"a.b": value}, the way ``dvc metrics`` names nested keys."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _dvc_json(args: list[str], cwd: Path) -> Any:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise GateError(f"dvc {' '.join(args)} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        raise GateError(f"dvc {' '.join(args)} printed no JSON: {proc.stdout[:200]!r}") from None


def workspace_metrics(cwd: Path) -> tuple[Metrics, dict[str, str]]:
    """The workspace's metrics, and for each unreadable metric file why (``dvc metrics show``)."""
    shown = _dvc_json(["metrics", "show"], cwd)
    metrics: Metrics = {}
    errors: dict[str, str] = {}
    for rev in shown.values():  # one entry: the workspace
        if "error" in rev:
            raise GateError(f"dvc metrics show: {rev['error'].get('msg', rev['error'])}")
        for path, entry in rev.get("data", {}).items():
            path = path.replace("\\", "/")
            if "error" in entry:
                err = entry["error"]
                errors[path] = "file not found" if err.get("type") == "FileNotFoundError" else err.get("msg", str(err))
            else:
                metrics[path] = flatten(entry.get("data", {}))
    return metrics, errors


def ref_metrics(ref: str, cwd: Path) -> tuple[Metrics, dict[str, str]]:
    """The metrics committed at git ``ref``, and for each metric file there that cannot be read why.

    A metric file absent at ``ref`` (not declared in its dvc.yaml, or declared but not there) is in
    neither. ``dvc metrics diff`` cannot tell the two apart (both have no "old" value), so the
    files are read with DVC's API, as ``dvc metrics show`` reads them.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.metrics.show import to_relpath

    try:
        with Repo(str(cwd)) as repo:
            shown = {rev: to_relpath(repo.fs, repo.root_dir, result) for rev, result in repo.metrics.show(revs=[ref]).items()}
    except DvcException as exc:
        raise GateError(f"baseline {ref}: {exc}") from None
    at_ref = shown.get(ref) or next((r for rev, r in shown.items() if rev != "workspace"), {})
    if "error" in at_ref:
        raise GateError(f"baseline {ref}: dvc cannot read the metrics there: {at_ref['error']}")
    metrics: Metrics = {}
    errors: dict[str, str] = {}
    for path, entry in at_ref.get("data", {}).items():
        path = path.replace("\\", "/")
        if "error" not in entry:
            metrics[path] = flatten(entry.get("data", {}))
        elif not isinstance(entry["error"], FileNotFoundError):
            # DVC says "unable to read: 'PATH', WHY" with PATH relative to its own working folder
            errors[path] = re.sub(r"^unable to read: '[^']*', ", "", str(entry["error"])) or type(entry["error"]).__name__
    return metrics, errors


def file_metrics(path: Path) -> Metrics:
    """A baseline JSON file: {metric file: {key: value}} (keys nested or dotted)."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GateError(f"baseline {path} is not valid JSON (made by --write-baseline?): {exc}") from None
    except OSError as exc:
        raise GateError(f"baseline {path} cannot be read: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise GateError(f"baseline {path}: expected {{metric file: {{key: value}}}}")
    return {p.replace("\\", "/"): flatten(v) for p, v in raw.items()}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_one(rule: Rule, path: str, key: str, baseline: Any, value: Any, why_missing: str) -> Check:
    """The verdict on one value; ``baseline`` None means the baseline has none (raises GateError if it is not a finite number)."""
    if value is None:
        return Check(path, key, baseline, None, None, "MISSING", why_missing)
    new = _number(value)
    if new is None or not math.isfinite(new):
        return Check(path, key, baseline, value, None, "INVALID", "not a finite number")
    if baseline is None:
        return Check(path, key, None, value, None, "new", "no baseline value")
    old = _number(baseline)
    if old is None or not math.isfinite(old):
        raise GateError(f"the baseline's {path} has {key} = {baseline!r}, not a finite number to compare with; "
                        "choose another --baseline")
    allowed = rule.allowed(old)
    worse = rule.worsening(old, new)
    if worse > allowed:
        return Check(path, key, old, new, allowed, "WORSE", f"worse by {worse:.4g} > {allowed:.4g} allowed")
    status = "same" if worse == 0 else ("better" if worse < 0 else "ok")
    return Check(path, key, old, new, allowed, status)


def compare(rules: list[Rule], baseline: Metrics, workspace: Metrics, errors: dict[str, str],
            baseline_errors: dict[str, str] | None = None, baseline_name: str = "baseline") -> list[Check]:
    """Apply every rule to every metric file it matches (in the baseline or the workspace).

    ``baseline_errors``: metric files the baseline has but cannot read; one a rule tracks raises GateError.
    """
    baseline_errors = baseline_errors or {}
    checks: list[Check] = []
    seen: set[tuple[str, str]] = set()
    paths = sorted(set(baseline) | set(workspace) | set(errors) | set(baseline_errors))
    for rule in rules:
        matched = False
        for path in (p for p in paths if fnmatch.fnmatchcase(p, rule.files)):
            if path in baseline_errors:
                raise GateError(f"baseline {baseline_name}: {path} cannot be read ({baseline_errors[path]}); "
                                "repair it there or choose another --baseline")
            for key in rule.keys:
                old = baseline.get(path, {}).get(key)
                new = workspace.get(path, {}).get(key)
                if old is None and new is None and path not in errors:
                    continue  # a matching file without this key on either side
                matched = True
                if (path, key) in seen:
                    continue
                seen.add((path, key))
                if old is None and new is None:
                    continue  # unreadable now and absent before: nothing to compare
                if path in errors:
                    why = errors[path]
                elif path not in workspace:
                    why = "not declared as a metric in dvc.yaml"
                else:
                    why = f"'{key}' is null" if key in workspace[path] else f"no key '{key}'"
                checks.append(check_one(rule, path, key, old, new, f"in the workspace: {why}"))
        if not matched:
            keys = ", ".join(rule.keys)
            checks.append(Check(rule.files, keys, None, None, None, "MISSING",
                                "no metric matches this gate.yaml rule in the baseline or the workspace"))
    return checks


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(checks: list[Check], baseline_name: str) -> str:
    """A Markdown pipe table (readable in a terminal and in a GitHub summary) and a verdict line."""
    header = ["metric file", "key", baseline_name, "workspace", "change", "allowed", "result"]
    rows = []
    for c in checks:
        change = "-"
        if _number(c.baseline) is not None and _number(c.value) is not None:
            change = f"{c.value - c.baseline:+.4f}"
        result = f"{c.status}: {c.note}" if c.note else c.status
        allowed = f"{c.allowed:.4f}" if c.allowed is not None else "-"
        rows.append([c.path, c.key, _fmt(c.baseline), _fmt(c.value), change, allowed, result])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    table = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    failed = [c for c in checks if c.failed]
    verdict = (f"gate FAILED: {len(failed)} of {len(checks)} tracked metrics worse than tolerated or missing"
               if failed else f"gate passed: {len(checks)} tracked metrics within tolerance of {baseline_name}")
    return "\n".join([*table, "", verdict])


def write_baseline(path: Path, rules: list[Rule], workspace: Metrics) -> int:
    """Save the workspace's tracked metrics as a baseline file; returns how many values were written."""
    out: dict[str, dict[str, Any]] = {}
    for rule in rules:
        for file in sorted(p for p in workspace if fnmatch.fnmatchcase(p, rule.files)):
            for key in rule.keys:
                if key in workspace[file]:
                    value = workspace[file][key]
                    if isinstance(value, float) and not math.isfinite(value):
                        raise GateError(f"{file}: {key} is {value!r}, not a finite number; fix the metric before saving a baseline")
                    out.setdefault(file, {})[key] = value
    path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return sum(len(v) for v in out.values())


def run_gate(baseline: str, tolerances: str | Path, cwd: Path = Path(".")) -> tuple[bool, str]:
    """Compare the workspace of the project at ``cwd`` with ``baseline``; returns (passed, report)."""
    rules = load_rules(cwd / tolerances)
    workspace, errors = workspace_metrics(cwd)
    if (cwd / baseline).is_file():
        base, base_errors = file_metrics(cwd / baseline), {}
    else:
        base, base_errors = ref_metrics(baseline, cwd)
    checks = compare(rules, base, workspace, errors, base_errors, baseline)
    return not any(c.failed for c in checks), format_table(checks, baseline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fkd.gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD",
                        help="git ref (default HEAD: the committed metrics) or a baseline JSON file")
    parser.add_argument("--tolerances", default="gate.yaml", help="which metrics are tracked, and their tolerances")
    parser.add_argument("--write-baseline", metavar="FILE",
                        help="instead of comparing, save the workspace's tracked metrics to FILE")
    args = parser.parse_args(argv)
    try:
        if args.write_baseline:
            rules = load_rules(args.tolerances)
            n = write_baseline(Path(args.write_baseline), rules, workspace_metrics(Path("."))[0])
            print(f"wrote {n} tracked metric values to {args.write_baseline}")
            return 0
        passed, report = run_gate(args.baseline, args.tolerances)
    except GateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
