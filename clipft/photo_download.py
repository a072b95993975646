"""Photos named by URL: fetched by a bounded number of parallel downloads, with retries, a
timeout and a size limit, into a content-addressed cache beside the embedding cache, so that a
second run downloads nothing.

``http(s)://`` is read with the standard library (redirects only to http(s)); the cloud stores
in ``_SCHEME_PACKAGES`` through fsspec and the package for that scheme, when installed. Any other
scheme (``file://``, ``ftp://``, ``zip://``, ``memory://``, chained ``a::b`` URLs) is refused
before any download: local photos are named by path, and a URL must not reach local files.
Under ``<cache root>/downloads``, ``blobs/ab/<sha256 of the bytes>`` holds each photo once (URLs
of the same photo share it) and ``urls/cd/<sha256 of the URL>`` names the blob of a URL; both are
written atomically, the URL's file after its blob, so a URL file always names a finished blob.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urljoin, urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .cache.store import default_cache_dir
from .fileio import atomic_write

log = logging.getLogger(__name__)

# A scheme of two letters or more, so that a Windows drive (C:/...) stays a path.
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")
_HTTP = ("http", "https")
# The only schemes read through fsspec, with the package each needs (named when it is missing):
# remote stores only, so a catalogue cannot make clipft open local files, FIFOs or archives.
_SCHEME_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs",
                    "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
# Errors of fsspec reads that another try cannot mend.
_PERMANENT_OS_ERRORS = {FileNotFoundError: "not found", PermissionError: "permission denied",
                        IsADirectoryError: "a folder, not a photo", NotADirectoryError: "not found"}
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)


def is_url(ref: str) -> bool:
    return _URL.match(ref) is not None


def url_scheme(url: str) -> str:
    return _URL.match(url).group(1).lower()


class DownloadError(ValueError):
    """Photos named by URL that cannot be fetched at all: a missing package, an unusable cache."""


@dataclass(frozen=True)
class DownloadSettings:
    workers: int = 8  # downloads at a time
    timeout: float = 30.0  # seconds a server may stay silent before a try is abandoned
    tries: int = 3
    backoff: float = 1.0  # seconds before the second try, doubled before each next one
    max_bytes: int = 50 * 2**20
    max_redirects: int = 5
    max_wait: float = 60.0  # the longest Retry-After a server is obeyed for

    @property
    def deadline(self) -> float:
        """Seconds one try may take in all: ``timeout`` bounds each silence only, so a server
        sending a byte just before each timeout would otherwise hold a worker for ever."""
        return 4 * self.timeout


@dataclass(frozen=True)
class Fetched:
    """A URL's photo in the cache, or why it could not be downloaded."""

    path: Path | None
    reason: str = ""


class _Failure(Exception):
    """One try that failed; ``retry``: another try may succeed (a timeout, a 5xx, a 429)."""

    def __init__(self, reason: str, retry: bool = False, wait: float | None = None):
        super().__init__(reason)
        self.reason, self.retry, self.wait = reason, retry, wait


class _HttpOnlyRedirects(HTTPRedirectHandler):
    """Follows redirects to http(s) only: the standard handler also follows ftp:// (and reports
    file:// as a bare 3xx error), and a photo server must not send clipft to other protocols."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("location") or headers.get("uri")
        if target and urlsplit(urljoin(req.full_url, target)).scheme.lower() not in _HTTP:
            fp.close()
            raise _Failure(f"redirect to a non-HTTP URL refused ({target})")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _size(size: int) -> str:
    return f"{size / 2**20:.3g} MB" if size >= 2**20 else f"{size / 2**10:.3g} kB"


class PhotoDownloads:
    """Downloads photos named by URL into ``<cache_dir>/downloads`` (default: the embedding
    cache's folder). The same object remembers every URL's answer, so the pass that validates a
    catalogue and the pass that scores it make one set of tries (and cache reads) between them."""

    def __init__(self, cache_dir=None, settings: DownloadSettings = DownloadSettings(), progress: bool = True):
        self.root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "downloads"
        self.settings, self.progress = settings, progress
        self._seen: dict[str, Fetched] = {}  # every URL's answer in this run, failures included
        redirects = _HttpOnlyRedirects()
        redirects.max_redirections = settings.max_redirects
        self._opener = build_opener(redirects)

    def fetch(self, urls) -> dict[str, Fetched]:
        """Each distinct URL's photo: from the cache, else downloaded (in parallel)."""
        urls = list(dict.fromkeys(urls))
        found = {url: self._seen.get(url) or self._cached(url) for url in urls}
        todo = [url for url, fetched in found.items() if fetched is None]
        if todo:
            self._check_schemes(todo)
            found.update(self._download_all(todo))
            log.info("downloaded %d of %d photo URLs (the rest from %s)", len(todo), len(urls), self.root)
        self._seen.update(found)
        return found

    def _download_all(self, urls: list[str]) -> dict[str, Fetched]:
        pool = ThreadPoolExecutor(min(self.settings.workers, len(urls)), thread_name_prefix="clipft-download")
        done = {}
        try:
            futures = {pool.submit(self._download, url): url for url in urls}
            with tqdm(total=len(urls), unit="photo", desc="Downloading photos", disable=not self.progress) as bar:
                for future in as_completed(futures):
                    done[futures[future]] = future.result()
                    bar.update()
        finally:
            # an error (an unwritable cache) or Ctrl-C must not wait for the downloads still queued
            pool.shutdown(wait=True, cancel_futures=True)
        return done

    def _download(self, url: str) -> Fetched:
        try:
            data = self._with_retries(url)
        except _Failure as failure:
            return Fetched(None, f"download failed: {failure.reason}")
        return Fetched(self._store(url, data))

    def _with_retries(self, url: str) -> bytes:
        attempt = 1
        while True:
            try:
                data, content_type = self._read(url)
                _check_image(data, content_type)
                return data
            except _Failure as failure:
                if not failure.retry or attempt >= self.settings.tries:
                    raise _Failure(failure.reason + (f" after {attempt} tries" if attempt > 1 else "")) from None
                time.sleep(failure.wait if failure.wait is not None else self.settings.backoff * 2 ** (attempt - 1))
                attempt += 1

    def _read(self, url: str) -> tuple[bytes, str | None]:
        if url_scheme(url) in _HTTP:
            return self._read_http(url)
        return self._read_fsspec(url), None

    def _read_http(self, url: str) -> tuple[bytes, str | None]:
        try:
            with self._opener.open(Request(url, headers={"User-Agent": "clipft"}), timeout=self.settings.timeout) as r:
                declared = r.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.settings.max_bytes:
                    raise _Failure(f"larger than {_size(self.settings.max_bytes)} ({_size(int(declared))})")
                return self._read_limited(r), r.headers.get_content_type()
        except HTTPError as err:
            raise self._http_failure(err) from None
        except URLError as err:
            timed_out = isinstance(err.reason, TimeoutError)
            raise _Failure("timed out" if timed_out else f"cannot connect ({err.reason})", retry=True) from None
        except TimeoutError:
            raise _Failure("timed out", retry=True) from None
        except (http.client.HTTPException, OSError) as err:  # a dropped connection, a TLS error, ...
            raise _Failure(f"connection broken ({type(err).__name__}: {err})", retry=True) from None
        except ValueError as err:  # http.client refuses URLs with spaces or control characters
            raise _Failure(f"invalid URL ({err})") from None

    def _http_failure(self, err: HTTPError) -> _Failure:
        if 300 <= err.code < 400:
            if str(err.msg).startswith(HTTPRedirectHandler.inf_msg):
                return _Failure(f"more than {self.settings.max_redirects} redirects")
            return _Failure(f"redirect refused ({err.msg})")
        retry_after = err.headers.get("Retry-After", "") if err.headers else ""
        wait = min(float(retry_after), self.settings.max_wait) if retry_after.isdigit() else None
        return _Failure(f"HTTP {err.code} {err.reason}", retry=err.code in _RETRY_STATUS, wait=wait)

    def _read_fsspec(self, url: str) -> bytes:
        import fsspec  # present: _check_schemes ran first

        try:
            fs, path = fsspec.core.url_to_fs(url)
            size = fs.size(path)
            if size is not None and size > self.settings.max_bytes:
                raise _Failure(f"larger than {_size(self.settings.max_bytes)} ({_size(size)})")
            with fs.open(path, "rb") as f:
                return self._read_limited(f)
        except _Failure:
            raise
        except OSError as err:  # TimeoutError and ConnectionError included: worth another try
            permanent = _PERMANENT_OS_ERRORS.get(type(err))
            raise _Failure(permanent or f"{type(err).__name__}: {err}", retry=permanent is None) from None
        except Exception as err:  # noqa: BLE001 (credentials, a bad bucket name, ...: fail this photo only)
            raise _Failure(f"{type(err).__name__}: {err}") from None

    def _read_limited(self, stream) -> bytes:
        """The whole body, refused as soon as it passes ``max_bytes`` (a server may not say its
        size) or the try passes its deadline (``timeout`` only bounds each wait for data)."""
        max_bytes, deadline = self.settings.max_bytes, self.settings.deadline
        give_up = time.monotonic() + deadline
        # read1: what has arrived, so that a trickle cannot stall one read past the deadline
        read = getattr(stream, "read1", stream.read)
        chunks, size = [], 0
        while chunk := read(1 << 16):
            size += len(chunk)
            if size > max_bytes:
                raise _Failure(f"larger than {_size(max_bytes)}")
            if time.monotonic() > give_up:
                raise _Failure(f"too slow: not finished within {deadline:g} s")
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_schemes(self, urls: list[str]) -> None:
        """Stop before any download when a URL's scheme is not one clipft reads, or needs a
        package that is not installed."""
        chained = next((url for url in urls if url_scheme(url) not in _HTTP and "::" in url), None)
        if chained is not None:  # fsspec reads "a::b" as a chain, which could reach local files
            raise DownloadError(f"{chained}: chained URLs (with '::') are not supported: name one photo per URL")
        examples = {url_scheme(url): url for url in reversed(urls)}
        for scheme, url in examples.items():
            if scheme not in _HTTP:
                _check_fsspec_scheme(scheme, url)

    def _cached(self, url: str) -> Fetched | None:
        try:
            digest = self._url_file(url).read_text().strip()
        except (OSError, UnicodeDecodeError):  # not downloaded yet (or the cache is unusable: found on writing)
            return None
        blob = self._blob(digest)
        return Fetched(blob) if re.fullmatch(r"[0-9a-f]{64}", digest) and blob.is_file() else None

    def _store(self, url: str, data: bytes) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        blob = self._blob(digest)
        try:
            if not blob.is_file():
                with atomic_write(blob, "wb") as f:
                    f.write(data)
            with atomic_write(self._url_file(url)) as f:
                f.write(digest)
        except OSError as err:
            raise DownloadError(f"{self.root}: cannot write downloaded photos there ({err.strerror or err}); "
                                "pass --cache-dir with a writable folder") from None
        return blob

    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / digest

    def _url_file(self, url: str) -> Path:
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.root / "urls" / key[:2] / key


def _check_image(data: bytes, content_type: str | None) -> None:
    """Refuse what is no image at all (a login page, an error page sent with status 200); a
    damaged image passes here and is reported when it is decoded."""
    try:
        with Image.open(io.BytesIO(data)):
            pass
    except UnidentifiedImageError:
        raise _Failure(f"not an image ({content_type or f'{len(data)} bytes'})") from None
    except (OSError, ValueError, Image.DecompressionBombError):
        pass


def _check_fsspec_scheme(scheme: str, url: str) -> None:
    package = _SCHEME_PACKAGES.get(scheme)
    if package is None:
        raise DownloadError(f"{url}: unsupported URL scheme '{scheme}': name local photos by path; "
                            f"URLs must be http(s):// or {', '.join(s + '://' for s in _SCHEME_PACKAGES)}")
    try:
        import fsspec
    except ImportError:
        raise DownloadError(f"{url}: reading {scheme}:// photos needs fsspec: pip install fsspec {package}") from None
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        raise DownloadError(f"{url}: reading {scheme}:// photos needs {package}: pip install {package}") from None
    except ValueError:  # a scheme of the list that this fsspec version does not know
        raise DownloadError(f"{url}: reading {scheme}:// photos needs a newer fsspec and {package}: "
                            f"pip install -U fsspec {package}") from None
