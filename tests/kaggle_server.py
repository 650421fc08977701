"""A loopback stand-in for the Kaggle API, for testing the official client without patching it.

With ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` the kaggle 2.x client sends every call as
``POST http://localhost/api/v1/<service>/<method>`` with a JSON body and HTTP basic auth
(username, key). ``HTTP_PROXY=http://127.0.0.1:PORT`` routes those requests, and any
redirect or upload URL on ``http://localhost``, to this server, so nothing leaves the
machine. :meth:`KaggleServer.client_env` builds such an environment, with a private HOME
and ``KAGGLE_CONFIG_DIR`` so the real ``~/.kaggle`` is never read.

What it answers (competition service only):
- ``DownloadDataFiles {competitionName}``: 302 to ``http://localhost/files/<competition>.zip``,
  which it then serves (the bytes given to :meth:`add_competition`).
- ``StartSubmissionUpload {fileName, contentLength, ...}``: a token and an upload URL;
  ``PUT`` to that URL stores the bytes; ``CreateSubmission {blobFileTokens,
  submissionDescription}`` records a submission (see :attr:`submissions`).
Wrong credentials get 401; :meth:`fail` makes one endpoint answer any status.
"""
from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

API_PREFIX = "/api/v1/competitions.CompetitionApiService/"
#: Kaggle-like error texts for the statuses tests ask for.
ERROR_MESSAGES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "You must accept this competition's rules before you'll be able to download files.",
    404: "Not found",
    500: "Internal server error",
}


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str  # without scheme/host: "/api/v1/..." or "/files/x.zip"
    headers: dict[str, str]
    body: bytes

    @property
    def endpoint(self) -> str:
        """The API method name (``DownloadDataFiles``) or the first path segment (``files``, ``upload``)."""
        if self.path.startswith(API_PREFIX):
            return self.path[len(API_PREFIX):]
        return self.path.strip("/").split("/")[0]

    def json(self):
        return json.loads(self.body or b"{}")


@dataclass
class Submission:
    """A submission the client created: which competition, which file, which message."""

    competition: str
    file_name: str
    content: bytes
    message: str


@dataclass
class KaggleServer:
    """The fake Kaggle API on 127.0.0.1; use as a context manager or through the ``kaggle_server`` fixture."""

    username: str = "fkd-test-user"
    key: str = "fkd-test-key-0123456789abcdef"
    requests: list[RecordedRequest] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)
    _zips: dict[str, bytes] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)
    _uploads: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # token -> (file name, bytes)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # -- set-up -------------------------------------------------------------------------
    def add_competition(self, competition: str, zip_bytes: bytes) -> None:
        """Serve ``zip_bytes`` as the competition's download."""
        self._zips[competition] = zip_bytes

    def fail(self, endpoint: str, status: int) -> None:
        """Make ``endpoint`` (an API method name, ``files`` or ``upload``) answer ``status``."""
        self._failures[endpoint] = status

    def start(self) -> "KaggleServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kaggle-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "KaggleServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self, home: Path, credentials: bool = True, port: int | None = None, base: dict | None = None) -> dict:
        """Environment for a kaggle-client subprocess that talks only to this server.

        ``home`` becomes HOME and holds the config dir (``home/.kaggle``); every inherited
        KAGGLE_* and proxy variable is dropped. ``credentials`` adds KAGGLE_USERNAME/KAGGLE_KEY
        (the server's); ``port`` points the client at another port (e.g. a closed one).
        """
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.upper().startswith("KAGGLE_") and "PROXY" not in k.upper()}
        proxy = f"http://127.0.0.1:{self.port if port is None else port}"
        home = Path(home)
        (home / ".kaggle").mkdir(parents=True, exist_ok=True)
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            KAGGLE_CONFIG_DIR=str(home / ".kaggle"),
            KAGGLE_API_ENVIRONMENT="LOCALHOST",
            # every scheme goes to the loopback server; nothing bypasses it
            HTTP_PROXY=proxy, http_proxy=proxy, HTTPS_PROXY=proxy, https_proxy=proxy, ALL_PROXY=proxy, all_proxy=proxy,
            NO_PROXY="", no_proxy="",
        )
        if credentials:
            env.update(KAGGLE_USERNAME=self.username, KAGGLE_KEY=self.key)
        return env

    def write_kaggle_json(self, home: Path, username: str | None = None, key: str | None = None) -> Path:
        """Write ``home/.kaggle/kaggle.json`` (mode 600), like a user who downloaded their API token."""
        path = Path(home) / ".kaggle" / "kaggle.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"username": username or self.username, "key": key or self.key}))
        path.chmod(0o600)
        return path

    def calls(self, endpoint: str) -> list[RecordedRequest]:
        """Recorded requests to ``endpoint``."""
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    # -- request handling (server threads) -----------------------------------------------
    def _authorized(self, headers: dict[str, str]) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.key}".encode()).decode()
        return headers.get("authorization") == expected

    def _handle(self, req: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(req)
        endpoint = req.endpoint
        if req.method == "CONNECT":  # an https request: never tunnelled anywhere
            return 403, {}, b""
        if req.path.startswith(API_PREFIX):
            if req.method != "POST":
                return _json(405, {"code": 405, "message": "POST only"})
            if not self._authorized(req.headers):
                return _error(401)
        if endpoint in self._failures:
            return _error(self._failures[endpoint])
        try:
            body = req.json() if req.path.startswith(API_PREFIX) else {}
        except json.JSONDecodeError:
            return _error(400)
        if endpoint == "DownloadDataFiles":
            competition = body.get("competitionName", "")
            if competition not in self._zips:
                return _error(404)
            return 302, {"Location": f"http://localhost/files/{competition}.zip"}, b""
        if endpoint == "files" and req.method == "GET":
            name = req.path.rsplit("/", 1)[-1]
            competition = name[: -len(".zip")] if name.endswith(".zip") else None
            if competition not in self._zips:
                return _error(404)
            return 200, {"Content-Type": "application/zip"}, self._zips[competition]
        if endpoint == "StartSubmissionUpload":
            with self._lock:
                token = f"blob-token-{len(self._uploads) + 1}"
                self._uploads[token] = (body.get("fileName", ""), b"")
            return _json(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})
        if endpoint == "upload" and req.method == "PUT":
            token = req.path.rsplit("/", 1)[-1]
            with self._lock:
                if token not in self._uploads:
                    return _error(404)
                self._uploads[token] = (self._uploads[token][0], req.body)
            return 200, {}, b""
        if endpoint == "CreateSubmission":
            token = body.get("blobFileTokens", "")
            with self._lock:
                if token not in self._uploads:
                    return _error(400)
                file_name, content = self._uploads[token]
                self.submissions.append(Submission(body.get("competitionName", ""), file_name, content,
                                                   body.get("submissionDescription", "")))
                ref = len(self.submissions)
            return _json(200, {"message": "Successfully submitted", "ref": ref})
        return _error(404)


def _json(status: int, obj) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _error(status: int) -> tuple[int, dict[str, str], bytes]:
    """Kaggle's error shape: a JSON body with code and message."""
    return _json(status, {"code": status, "message": ERROR_MESSAGES.get(status, f"HTTP {status}")})


def _make_handler(server: KaggleServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _serve(self) -> None:
            req = RecordedRequest(
                method=self.command,
                path=urlsplit(self.path).path if "://" in self.path else self.path.split("?")[0],
                headers={k.lower(): v for k, v in self.headers.items()},
                body=b"" if self.command == "CONNECT" else self._read_body(),
            )
            status, headers, body = server._handle(req)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if self.command == "CONNECT":
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = do_CONNECT = _serve

        def log_message(self, format, *args):  # keep test output clean
            pass

    return Handler


@pytest.fixture
def kaggle_server():
    """A started :class:`KaggleServer`, stopped after the test."""
    with KaggleServer() as server:
        yield server
