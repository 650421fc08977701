"""Regression gate: fail when a tracked metric got worse than a baseline by more than its tolerance.

    python -m fkd.gate [--baseline REF|FILE] [--tolerances gate.yaml] [--write-baseline FILE]

Run it from the project root. The workspace's metrics are compared with a baseline: a git ref
(default ``HEAD``: the committed metrics) or a JSON file ``{metric file: {key: value}}``
(``--write-baseline`` writes one). Both sides are read with DVC's Python API, as ``dvc metrics show``
reads them. ``dvc metrics diff`` on its own never fails and, without a ref, compares HEAD with itself
on a clean checkout (dvc #7578), so the gate always names its baseline and decides from the numbers.

A tracked value counts as new (and passes) only when the baseline has none: its metric file is
absent there, or the file lacks the key. A baseline metric file that is there but cannot be read,
or a baseline value that is there but not a finite number (null, a string, a bool, NaN, inf), stops
the gate: nothing can be compared with it.

Exit 0: every tracked metric is within tolerance. Exit 1: one got worse, or is missing, unreadable or
not a finite number in the workspace. Exit 2: the gate could not run (bad gate.yaml, unknown ref,
unreadable baseline, dvc failed).

The pure parts (:func:`parse_rules`, :func:`compare`, :func:`format_table`, :func:`baseline_values`)
take plain dicts; :func:`read_metrics` is the only part that asks DVC.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fkd.core.errors import FkdError


#: metric file -> dotted key (nested JSON keys joined with ".", as dvc shows them) -> value
Metrics = dict[str, dict[str, Any]]

NOT_FOUND = "file not found (run `dvc repro` to make it, or `dvc pull` to fetch it)"


class GateError(FkdError, RuntimeError):
    """The gate could not run; printed as one line, exit code 2."""


def _as_tuple(value: Any) -> Any:
    return (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else value


_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)
Tolerance = Annotated[float, Field(ge=0, description="a finite number >= 0")]


class Rule(BaseModel):
    """One entry of gate.yaml ``tracked``: metric files (a glob), keys and how much worse they may get."""

    model_config = _STRICT
    files: Annotated[str, Field(min_length=1, description="a glob of metric files")]
    keys: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_as_tuple),
                    Field(min_length=1, description="a metric name or a list of metric names")]
    abs: Tolerance
    rel: Tolerance
    better: Annotated[Literal["lower", "higher"], Field(description="lower or higher")] = "lower"

    def allowed(self, baseline: float) -> float:
        """How much worse than ``baseline`` a value may be and still pass."""
        return self.abs + self.rel * abs(baseline)

    def worsening(self, baseline: float, value: float) -> float:
        """Positive when ``value`` is worse than ``baseline``."""
        return value - baseline if self.better == "lower" else baseline - value


class GateFile(BaseModel):
    """gate.yaml: the ``tracked`` rules, nothing else."""

    model_config = _STRICT
    tracked: Annotated[list[Rule], Field(min_length=1, description="a list of rules")]


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


def _error_line(source: str, err: dict) -> str:
    """pydantic's error -> the project's one line, naming the dotted key (``tracked[2].abs``)."""
    loc = err["loc"]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    model = Rule if len(loc) > 1 else GateFile
    if err["type"] == "missing":
        return f"{source}: missing key '{key}'"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}' (allowed here: {', '.join(model.model_fields)})"
    got = list(err["input"]) if isinstance(err["input"], tuple) else err["input"]  # keys after _as_tuple
    if not loc:
        return f"{source}: expected a mapping with a 'tracked:' list of rules, got {got!r}"
    if isinstance(loc[-1], int) and len(loc) == 2:
        what = f"a mapping of {', '.join(Rule.model_fields)}"
    else:
        what = model.model_fields[next(p for p in reversed(loc) if isinstance(p, str))].description
    return f"{source}: '{key}' must be {what}, got {got!r}"


def parse_rules(raw: Any, source: str = "gate.yaml") -> list[Rule]:
    """Check gate.yaml's content (as loaded from YAML); every problem is one line naming ``source`` and the key."""
    try:
        return list(GateFile.model_validate(raw).tracked)
    except ValidationError as exc:
        raise GateError(_error_line(source, exc.errors()[0])) from None


def load_rules(path: str | Path) -> list[Rule]:
    """Read and check gate.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GateError(f"{path} not found (run from the project root or pass --tolerances)") from None
    except yaml.YAMLError as exc:
        raise GateError(f"{path} is not valid YAML: {exc}") from None
    return parse_rules(raw, str(path))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON -> {"a.b": value}, the way ``dvc metrics`` names nested keys."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _why(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return NOT_FOUND
    # DVC says "unable to read: 'PATH', WHY" with PATH relative to its own working folder
    return re.sub(r"^unable to read: '[^']*', ", "", str(error)) or type(error).__name__


def read_metrics(root: Path, ref: str | None = None) -> dict[str, tuple[Metrics, dict[str, str]]]:
    """The metrics of the workspace (key ``"workspace"``) and of git ``ref`` (key ``ref``), read by DVC in one call.

    Each is (metrics, errors): for each metric file DVC lists its flattened values, or why it cannot be
    read. A metric file absent at ``ref`` (not declared there, or declared but not there) is in neither.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except DvcException as exc:
        raise GateError(f"{exc} (run the gate from the project root)") from None
    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.ERROR)  # its "failed to load metrics" warning would repeat the gate's one-line error
    try:
        with repo:
            shown = repo.metrics.show(revs=[ref] if ref else None, hide_workspace=False)
    except DvcException as exc:
        raise GateError(f"baseline {ref}: {exc}" if ref else f"dvc cannot read the metrics: {exc}") from None
    finally:
        dvc_log.setLevel(level)
    out = {}
    for rev, result in shown.items():
        name = ref if ref and rev != "workspace" else "workspace"  # without revs DVC names the workspace ""
        if "error" in result:
            raise GateError(f"{'the workspace' if name == 'workspace' else f'baseline {ref}'}: "
                            f"dvc cannot read the metrics there: {result['error']}")
        metrics: Metrics = {}
        errors: dict[str, str] = {}
        for path, entry in result.get("data", {}).items():
            path = path.replace("\\", "/")
            if "error" in entry:
                errors[path] = _why(entry["error"])
            else:
                metrics[path] = flatten(entry.get("data", {}))
        out[name] = (metrics, errors)
    return out


def raw_reader(root: Path, rev: str | None) -> Callable[[str], Any]:
    """A function reading a metric file at ``rev`` (None: the workspace) as it is, nulls and lists included."""
    import dvc.api
    from dvc.exceptions import DvcException

    def read(path: str) -> Any:
        try:
            text = dvc.api.read(path, repo=str(root), rev=rev)
            suffix = Path(path).suffix
            return json.loads(text) if suffix == ".json" else tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
        except (DvcException, OSError, ValueError, yaml.YAMLError) as exc:
            raise GateError(f"{'the workspace' if rev is None else f'baseline {rev}'}: {path} cannot be read: {exc}") from None

    return read


def restore_dropped(rules: list[Rule], metrics: Metrics, read_raw: Callable[[str], Any]) -> None:
    """Put back the tracked values DVC leaves out of what it shows (null, lists, ``{}``), read from the file itself.

    Without this a baseline's ``"rmse": null`` would look absent, and pass as new.
    """
    for path, values in metrics.items():
        wanted = {k for rule in rules if fnmatch.fnmatchcase(path, rule.files) for k in rule.keys} - set(values)
        if wanted:
            raw = flatten(read_raw(path))
            values.update({k: raw[k] for k in wanted if k in raw})


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
    """``value`` as a finite float, or None (bools, strings, null, NaN and inf are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def baseline_number(value: Any, path: str, key: str, baseline_name: str = "baseline") -> float:
    """A baseline's value as a number; GateError if it is not a finite number (null included): nothing to compare with."""
    old = _number(value)
    if old is None:
        raise GateError(f"baseline {baseline_name}: {path} has {key} = {_show(value)}, not a finite number to "
                        "compare with; choose another --baseline")
    return old


def check_one(rule: Rule, path: str, key: str, old: float | None, value: Any) -> Check:
    """The verdict on a value the workspace has; ``old`` is the baseline's number, None when it has none."""
    new = _number(value)
    if new is None:
        return Check(path, key, old, value, None, "INVALID", "not a finite number" + (" (null)" if value is None else ""))
    if old is None:
        return Check(path, key, None, value, None, "new", "no baseline value")
    allowed = rule.allowed(old)
    worse = rule.worsening(old, new)
    if worse > allowed:
        return Check(path, key, old, new, allowed, "WORSE", f"worse by {worse:.4g} > {allowed:.4g} allowed")
    status = "same" if worse == 0 else ("better" if worse < 0 else "ok")
    return Check(path, key, old, new, allowed, status)


def compare(rules: list[Rule], baseline: Metrics, workspace: Metrics, errors: dict[str, str] | None = None,
            baseline_errors: dict[str, str] | None = None, baseline_name: str = "baseline") -> list[Check]:
    """Apply every rule to every metric file it matches (in the baseline or the workspace).

    ``errors``: workspace metric files that cannot be read, and why. ``baseline_errors``: baseline
    metric files that cannot be read; one a rule tracks raises GateError. A key counts as absent only
    when its file or the key is not there: a value that is there (even null) is checked.
    """
    errors = errors or {}
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
            old_values, new_values = baseline.get(path, {}), workspace.get(path, {})
            for key in rule.keys:
                has_old, has_new = key in old_values, key in new_values
                if not has_old and not has_new and path not in errors:
                    continue  # a matching file without this key on either side
                matched = True
                if (path, key) in seen:
                    continue
                seen.add((path, key))
                old = baseline_number(old_values[key], path, key, baseline_name) if has_old else None
                if has_new:
                    checks.append(check_one(rule, path, key, old, new_values[key]))
                    continue
                if not has_old:
                    continue  # unreadable now and absent before: nothing to compare
                if path in errors:
                    why = errors[path]
                elif path not in workspace:
                    why = "not declared as a metric in dvc.yaml"
                else:
                    why = f"no key '{key}'"
                checks.append(Check(path, key, old, None, None, "MISSING", f"in the workspace: {why}"))
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


def baseline_values(rules: list[Rule], workspace: Metrics) -> Metrics:
    """The workspace's tracked values, for a baseline file; each must be a finite number."""
    out: Metrics = {}
    for rule in rules:
        for file in sorted(p for p in workspace if fnmatch.fnmatchcase(p, rule.files)):
            for key in rule.keys:
                if key in workspace[file]:
                    value = workspace[file][key]
                    if _number(value) is None:
                        raise GateError(f"{file}: {key} is {_show(value)}, not a finite number; "
                                        "fix the metric before saving a baseline")
                    out.setdefault(file, {})[key] = value
    return out


def write_baseline(path: Path, rules: list[Rule], workspace: Metrics) -> int:
    """Save the workspace's tracked metrics as a baseline file (whole or not at all); returns how many values were written."""
    from fkd.core.io import save_bytes  # imports numpy: only when writing

    out = baseline_values(rules, workspace)
    try:
        save_bytes(path, (json.dumps(out, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise GateError(f"cannot write the baseline to {path}: {exc.strerror or exc}; "
                        "choose another --write-baseline path") from None
    return sum(len(v) for v in out.values())


def workspace_metrics(root: Path, rules: list[Rule]) -> tuple[Metrics, dict[str, str]]:
    """The workspace's metrics and unreadable metric files, tracked values DVC leaves out put back."""
    metrics, errors = read_metrics(root)["workspace"]
    restore_dropped(rules, metrics, raw_reader(root, None))
    return metrics, errors


def run_gate(baseline: str, tolerances: str | Path, root: Path = Path(".")) -> tuple[bool, str]:
    """Compare the workspace of the project at ``root`` with ``baseline``; returns (passed, report)."""
    rules = load_rules(root / tolerances)
    is_file = (root / baseline).is_file()
    shown = read_metrics(root, None if is_file else baseline)
    workspace, errors = shown["workspace"]
    restore_dropped(rules, workspace, raw_reader(root, None))
    if is_file:
        base, base_errors = file_metrics(root / baseline), {}
    else:
        base, base_errors = shown[baseline]
        restore_dropped(rules, base, raw_reader(root, baseline))
    # a file DVC no longer lists although dvc.yaml declares it (one of a metrics directory) is simply gone
    errors.update({p: NOT_FOUND for p in set(base) - set(workspace) - set(errors) if not (root / p).exists()})
    checks = compare(rules, base, workspace, errors, base_errors, baseline)
    return not any(c.failed for c in checks), format_table(checks, baseline)


def _not_empty(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError(f"must not be empty, got {value!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fkd.gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", type=_not_empty,
                        help="git ref (default HEAD: the committed metrics) or a baseline JSON file")
    parser.add_argument("--tolerances", default="gate.yaml", help="which metrics are tracked, and their tolerances")
    parser.add_argument("--write-baseline", metavar="FILE", type=_not_empty,
                        help="instead of comparing, save the workspace's tracked metrics to FILE")
    args = parser.parse_args(argv)
    try:
        if args.write_baseline:
            rules = load_rules(args.tolerances)
            n = write_baseline(Path(args.write_baseline), rules, workspace_metrics(Path("."), rules)[0])
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
