"""Push what this machine's DVC run-cache entries name: ``python -m fkd.run_cache``.

``dvc push --run-cache`` uploads the run-cache entries (.dvc/cache/runs) and the cached outputs of
dvc.lock, but not the ``cache: false`` outputs an entry records (each training stage's metrics.json
and dvclive curves): without them another machine that pulls the run-cache cannot restore the stage
and trains it again. Run this after ``dvc push --run-cache``, against the same default remote.
Uses DVC's repo API (dvc 3.x, pinned in requirements.txt).
"""
from __future__ import annotations

from pathlib import Path


def push_run_cache_outputs() -> tuple[int, int, int, int]:
    """Upload the objects the local run-cache entries name that are held here; (entries, objects, uploaded, failed)."""
    from dvc.repo import Repo

    with Repo() as repo:
        entries = [(p.parent.name, p.name) for p in Path(repo.stage_cache.cache_dir).glob("*/*/*")]
        used = repo.stage_cache.get_used_objs(entries)
        # Only what this machine holds: entries pulled from the remote name objects that are there already.
        objs = {obj for odb, odb_objs in used.items() for obj in odb_objs if (odb or repo.cache.local).exists(obj.value)}
        result = repo.cloud.push(objs)
    return len(entries), len(objs), len(result.transferred), len(result.failed)


def main() -> None:
    entries, objs, uploaded, failed = push_run_cache_outputs()
    print(f"run-cache: {entries} entries; {objs} of the objects they name are here: {uploaded} uploaded, {failed} failed")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
