"""``clipft serve``: a finished run as a Label Studio ML backend, so that a project connected to
it gets clipft's labels as pre-annotations of every new task.

It speaks the protocol of HumanSignal's ``label-studio-ml`` package (label_studio_ml/api.py):
``GET /health`` (and ``/``), ``POST /setup``, ``POST /predict``, ``POST /webhook`` and
``GET /metrics``. The package itself is not used: its released versions pin old Flask and
Werkzeug, and the standard library's threading HTTP server is all this needs.

It binds to 127.0.0.1 unless told otherwise; any other address needs a token, which every
request must then carry as ``Authorization: Token <token>`` (or ``Bearer``), or as the password
of HTTP basic authentication, which is what Label Studio's model settings can send. A bad
request is answered 400 with a one-line JSON error, never a traceback.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import io
import ipaddress
import json
import logging
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

from ..labeller import Labeller
from ..photo_download import PhotoDownloads, is_url
from .app import PhotoError, label_photo, open_photo

log = logging.getLogger(__name__)

LOCAL_FILES = "/data/local-files/"
MAX_BODY = 64 * 1024 * 1024  # a batch of tasks with embedded thumbnails fits; anything larger is refused
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")


class ServeError(ValueError):
    """A request (or a server setting) clipft cannot serve; the message says why, in one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_binding(host: str, token: str | None) -> None:
    """Only loopback is served without a token: elsewhere anyone on the network could use the model."""
    if not token and not is_loopback(host):
        raise ServeError(f"--host {host}: serving beyond this machine needs a token (--token or CLIPFT_SERVE_TOKEN); "
                         f"every request must then send 'Authorization: Token <token>'")


def authorised(header: str | None, token: str | None) -> bool:
    """Whether an Authorization header carries the token (Token, Bearer, or basic auth's password)."""
    if not token:
        return True
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() not in ("token", "bearer"):
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


@dataclass
class Backend:
    """The run's labeller answering Label Studio's calls; photos named by path are read under
    ``document_root`` (Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)."""

    labeller: Labeller
    model_version: str
    document_root: Path | None = None
    cache_dir: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def health(self) -> dict:
        return {"status": "UP", "model_class": "clipft", "model_version": self.model_version}

    def setup(self, body: dict) -> dict:
        return {"model_version": self.model_version}

    def predict(self, body: dict) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise ServeError("predict: the request has no list 'tasks'")
        return {"results": [self.task_prediction(task, i) for i, task in enumerate(tasks)]}

    def webhook(self, body: dict) -> dict:
        """Annotations are not learnt from here: re-training is ``clipft import-labels`` then ``finetune``."""
        action = body.get("action")
        if action not in TRAIN_EVENTS:
            return {"status": "Unknown event"}
        return {"status": "ok", "result": f"{action} noted; clipft serve does not train (re-train with clipft finetune)"}

    def task_prediction(self, task, index: int) -> dict:
        """One task's prediction: a ``choices`` result per attribute that applies, each scored by
        its calibrated probability; the prediction's score is the least sure of them."""
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("image"), str):
            raise ServeError(f"predict: task {index} has no data.image (the photo's URL or path)")
        photo, title = self.read_photo(data["image"]), data.get("title")
        with self._lock:  # one model, shared by the server's threads
            table = label_photo(self.labeller, photo, title if isinstance(title, str) else None, top=1)
        results = [{"from_name": self.labeller.heads[row.attribute].spec.column, "to_name": "image",
                    "type": "choices", "value": {"choices": [row.value]}, "score": round(row.probability, 4)}
                   for row in table.itertuples() if row.status != "n/a"]
        score = min((r["score"] for r in results), default=0.0)
        return {"result": results, "score": score, "model_version": self.model_version}

    def read_photo(self, image: str) -> Image.Image:
        try:
            if image.startswith("data:"):
                return open_photo(io.BytesIO(data_uri_bytes(image)), "photo data URI")
            return open_photo(self.photo_file(image))
        except PhotoError as err:
            raise ServeError(str(err)) from None

    def photo_file(self, image: str) -> Path:
        """The file of a task's photo: a URL downloaded (through clipft's photo cache), a
        local-files URL or a path read under the document root."""
        if is_url(image):
            fetched = PhotoDownloads(self.cache_dir, progress=False).fetch([image])[image]
            if fetched.path is None:
                raise ServeError(f"photo {short(image)}: {fetched.reason}")
            return fetched.path
        parts = urlsplit(image)
        if parts.path == LOCAL_FILES or parts.path == LOCAL_FILES.rstrip("/"):
            image = unquote(parse_qs(parts.query).get("d", [""])[0])
        elif image.startswith("/data/"):
            raise ServeError(f"photo {short(image)}: served by Label Studio itself (an upload); clipft serve reads "
                             f"photos by URL, path or {LOCAL_FILES}?d=")
        return self.local_path(image)

    def local_path(self, name: str) -> Path:
        root = (self.document_root or Path.cwd()).resolve()
        path = (root / name).resolve()
        if self.document_root is not None and not path.is_relative_to(root):
            raise ServeError(f"photo {short(name)}: outside the document root {root}")
        if not path.is_file():
            raise ServeError(f"photo {short(name)}: no such file under {root}")
        return path


def data_uri_bytes(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if not header.endswith(";base64"):
        raise ServeError("photo data URI: only base64 data URIs are read")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ServeError("photo data URI: not valid base64") from None


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


ROUTES = {("GET", "/"): "health", ("GET", "/health"): "health", ("GET", "/metrics"): "metrics",
          ("POST", "/setup"): "setup", ("POST", "/predict"): "predict", ("POST", "/webhook"): "webhook"}


class Handler(BaseHTTPRequestHandler):
    """Routes a request to the server's :class:`Backend`; every answer is JSON."""

    server_version = "clipft-serve"

    def do_GET(self) -> None:
        self.answer("GET")

    def do_POST(self) -> None:
        self.answer("POST")

    def answer(self, method: str) -> None:
        try:
            status, body = 200, self.route(method)
        except ServeError as err:
            status, body = err.status, {"error": str(err)}
        except Exception as err:  # a bug: the log keeps the traceback, the client gets one line
            log.exception("clipft serve: %s %s failed", method, self.path)
            status, body = 500, {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
        self.send_json(status, body)

    def route(self, method: str):
        backend: Backend = self.server.backend
        if not authorised(self.headers.get("Authorization"), self.server.token):
            raise ServeError("unauthorised: send 'Authorization: Token <token>'", 401)
        name = ROUTES.get((method, urlsplit(self.path).path.rstrip("/") or "/"))
        if name is None:
            raise ServeError(f"no {method} {urlsplit(self.path).path} here (health, setup, predict, webhook)", 404)
        if name == "metrics":
            return {}
        if name == "health":
            return backend.health()
        return getattr(backend, name)(self.read_json())

    def read_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ServeError("the request has no Content-Length", 411)
        if int(length) > MAX_BODY:
            raise ServeError(f"the request is larger than {MAX_BODY // 2**20} MiB", 413)
        try:
            body = json.loads(self.rfile.read(int(length)) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ServeError(f"the request is not JSON ({err})") from None
        if not isinstance(body, dict):
            raise ServeError("the request body must be a JSON object")
        return body

    def send_json(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="clipft"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:  # to the logger, not stderr
        log.info("%s %s", self.address_string(), format % args)


def make_server(backend: Backend, host: str = "127.0.0.1", port: int = 9090,
                token: str | None = None) -> ThreadingHTTPServer:
    """The server, bound and ready for ``serve_forever`` (port 0: a free one, see ``server_address``)."""
    check_binding(host, token)
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.backend, server.token = backend, token or None
    return server


def load_backend(run: str | Path, device: str = "cpu", cache_dir=None, document_root=None) -> Backend:
    """The run's labeller as a backend; its model version is the run as ``predict`` names it, so
    Label Studio treats the backend's and ``predict``'s pre-annotations as the same model's."""
    labeller = Labeller.load(run, device, cache_dir)
    return Backend(labeller, str(run), Path(document_root) if document_root else None, cache_dir)
