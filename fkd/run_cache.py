"""Push what this machine's DVC run-cache entries name: ``python -m fkd.run_cache [-r REMOTE]``.

``dvc push --run-cache`` uploads the run-cache entries (.dvc/cache/runs) and the cached outputs of
dvc.lock, but not the ``cache: false`` outputs an entry records (each training stage's metrics.json
and dvclive curves): without them another machine that pulls the run-cache cannot restore the stage
and trains it again. Run this after ``dvc push --run-cache``, against the same remote.
Uses DVC's repo API (dvc 3.x, pinned in requirements.txt).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fkd.core.cli import StageError, run_stage


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m fkd.run_cache", description=__doc__.split("\n\n")[1].replace("\n", " "))
    ap.add_argument("-r", "--remote", metavar="NAME", help="the DVC remote to push to (default: core.remote, as dvc push)")
    return ap.parse_args(argv)


def _remote_errors() -> tuple[type[BaseException], ...]:
    """What a remote that cannot be reached or used raises through DVC's file systems."""
    from dvc.exceptions import DvcException

    errors: tuple[type[BaseException], ...] = (OSError, DvcException)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no S3 support installed
        return errors
    return (*errors, BotoCoreError, ClientError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def push_run_cache_outputs(remote: str | None = None) -> tuple[int, int, int, int]:
    """Upload the objects the local run-cache entries name that are held here to ``remote`` (default: the
    repo's default remote); (entries, objects, uploaded, failed). A remote that is not configured, cannot be
    reached or refuses the upload is a :class:`fkd.core.cli.StageError` naming it."""
    from dvc.config import RemoteConfigError
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo()
    except NotDvcRepoError as exc:
        raise StageError(f"{_one_line(exc)}: run python -m fkd.run_cache in the project's folder") from None
    with repo:
        try:
            target = repo.cloud.get_remote(remote, "push")  # the name and its config; no network yet
        except RemoteConfigError as exc:
            raise StageError(f"run-cache: {_one_line(exc)} (dvc remote list shows the remotes)") from None
        entries = [(p.parent.name, p.name) for p in Path(repo.stage_cache.cache_dir).glob("*/*/*")]
        used = repo.stage_cache.get_used_objs(entries)
        # Only what this machine holds: entries pulled from the remote name objects that are there already.
        objs = {obj for odb, odb_objs in used.items() for obj in odb_objs if (odb or repo.cache.local).exists(obj.value)}
        try:
            result = repo.cloud.push(objs, remote=target.name)
        except _remote_errors() as exc:
            url = repo.config["remote"][target.name].get("url", target.path)
            raise StageError(f"run-cache: cannot push to remote {target.name!r} ({url}): {_one_line(exc)}; check its url, "
                             f"endpointurl and credentials (dvc remote modify --local {target.name} ...) and that it can be "
                             "reached, then run this again") from None
    return len(entries), len(objs), len(result.transferred), len(result.failed)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    entries, objs, uploaded, failed = push_run_cache_outputs(args.remote)
    print(f"run-cache: {entries} entries; {objs} of the objects they name are here: {uploaded} uploaded, {failed} failed")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    run_stage(main)
