"""The official Kaggle client (kaggle 2.x), wrapped: downloads and submissions with one clear error line.

Failures become :class:`fkd.core.cli.StageError` that say what to do: no credentials (where
``kaggle.json`` goes, or which variables to set), 401 (a rejected key), 403 (accept the
competition's rules), no network. Credentials never reach the log: the client's verbose mode,
which prints request headers, is switched off, and whatever the client prints is logged with
the key and token blanked out.

The client fixes its config dir (``KAGGLE_CONFIG_DIR``) and API host (``KAGGLE_API_ENVIRONMENT``)
when it is first imported, and ``import kaggle`` already tries to sign in, so it is imported
here only when a Kaggle call is made.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from pathlib import Path

from fkd.core.cli import StageError

log = logging.getLogger("fkd.kaggle")

SETTINGS_URL = "https://www.kaggle.com/settings"
#: URLs of API calls (``.../v1/competitions.CompetitionApiService/DownloadDataFiles``), not of file transfers.
API_CALL = re.compile(r"/v1/[\w.]+Service/\w+")


def competition_url(competition: str) -> str:
    return f"https://www.kaggle.com/c/{competition}"


def rules_url(competition: str) -> str:
    return f"{competition_url(competition)}/rules"


class _Client:
    """An authenticated ``KaggleApi`` and the secrets to blank out of anything it prints."""

    def __init__(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # kaggle/__init__ signs in on import and prints help if it cannot
            from kaggle.api.kaggle_api_extended import KaggleApi
        self.api = KaggleApi()
        # "--verbose" (from VERBOSE=1) makes the client print request headers, credentials included.
        self.api.args = [a for a in KaggleApi.args if a not in ("--verbose", "-v")]
        self.config_file = Path(self.api.config)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), translate_errors(competition=None):
                self.api.authenticate()
        except SystemExit:  # the client's "no credentials" path: it prints help and calls exit(1)
            raise StageError(
                f"kaggle: no credentials found. Create an API token at {SETTINGS_URL} (API > Create New Token) "
                f"and save the downloaded kaggle.json as {self.config_file} (chmod 600), "
                "or set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN) in the environment"
            ) from None
        self._log_printed(printed.getvalue())
        log.info("using credentials (%s)", self.api.config_values.get("auth_method", "api key"))

    def secrets(self) -> list[str]:
        values = [self.api.config_values.get(k) for k in ("key", "token")]
        values += [os.environ.get(k) for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
        return [v for v in values if v and len(v) >= 4]

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def _log_printed(self, text: str) -> None:
        for line in self.redact(text).splitlines():
            if line.strip():
                log.info("client says: %s", line.strip())

    @contextlib.contextmanager
    def call(self, competition: str):
        """Run client calls with their printout logged (redacted) and their errors translated."""
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), translate_errors(competition):
                yield self.api
        finally:
            self._log_printed(printed.getvalue())


@contextlib.contextmanager
def translate_errors(competition: str | None):
    """HTTP and network failures of the client -> StageError with what to do about them."""
    import requests

    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        url = exc.response.url if exc.response is not None else ""
        if not API_CALL.search(url or ""):  # the file behind the API's redirect, or the upload URL
            raise StageError(
                f"kaggle: HTTP {status} from the file transfer for competition '{competition}' "
                "(a signed link may have expired); run again"
            ) from None
        raise StageError(_http_message(status, competition, exc)) from None
    except requests.RequestException as exc:  # connection refused, DNS, proxy, timeout
        raise StageError(
            f"kaggle: cannot reach the Kaggle API ({type(exc).__name__}): check the network connection "
            "(and HTTPS_PROXY if you use one), or download the competition zip by hand from "
            f"{competition_url(competition or 'facial-keypoints-detection')}/data and set data.source=local "
            "with data.path pointing at it"
        ) from None


def _http_message(status: int | None, competition: str | None, exc: Exception) -> str:
    what = f"competition '{competition}'" if competition else "sign-in"
    if status == 401:
        return (
            f"kaggle: 401 Unauthorized ({what}): the API key was rejected. Create a new token at "
            f"{SETTINGS_URL} (API > Create New Token) and replace kaggle.json, or fix KAGGLE_USERNAME/KAGGLE_KEY"
        )
    if status == 403 and competition:
        return (
            f"kaggle: 403 Forbidden ({what}): accept the competition rules at {rules_url(competition)} "
            "while signed in as the API key's user, then run again"
        )
    if status == 404 and competition:
        return f"kaggle: 404 Not Found: no competition '{competition}' (check params data.competition)"
    if status == 429:
        return "kaggle: 429 Too Many Requests: Kaggle is rate-limiting this account; wait a few minutes and run again"
    return f"kaggle: HTTP {status} ({what}): {exc}"


def download_competition(competition: str, dest_dir: str | Path) -> Path:
    """Download the competition's data zip into ``dest_dir``; returns the zip's path."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    client = _Client()
    log.info("downloading competition '%s'", competition)
    try:
        with client.call(competition) as api:
            api.competition_download_files(competition, path=str(dest_dir), force=True, quiet=True)
    except ValueError as exc:  # the client's own size check: "Downloaded file size (...) does not match ..."
        raise StageError(f"kaggle: download of competition '{competition}' is incomplete: {exc}") from None
    zip_path = dest_dir / f"{competition}.zip"
    if not zip_path.is_file():
        got = ", ".join(sorted(p.name for p in dest_dir.iterdir())) or "nothing"
        raise StageError(f"kaggle: expected {zip_path.name} from the download, got {got}")
    log.info("downloaded %s: %s", zip_path.name, human_size(zip_path.stat().st_size))
    return zip_path


def submit_to_kaggle(csv_path: str | Path, competition: str, message: str) -> str:
    """Upload a submission CSV to ``competition`` with the official client; returns Kaggle's reply message."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise StageError(f"kaggle: submission file {csv_path} does not exist")
    client = _Client()
    log.info("submitting %s, %s, to '%s'", csv_path, human_size(csv_path.stat().st_size), competition)
    with client.call(competition) as api:
        response = api.competition_submit(str(csv_path), message, competition, quiet=True)
    if response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise StageError(f"kaggle: uploading {csv_path} to competition '{competition}' failed; run again later")
    log.info("kaggle replied: %s (submission ref %s)", response.message, response.ref)
    return response.message


def human_size(n_bytes: int) -> str:
    """``12.3 MB (12,345,678 bytes)``."""
    return f"{n_bytes / 1e6:.1f} MB ({n_bytes:,} bytes)"
