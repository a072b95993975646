"""Photos named by URL, against a loopback HTTP server: retries, timeouts, redirects, size
limits, the content-addressed cache, and catalogues and commands that name photos by URL."""
import hashlib
import importlib.util
import io
import os
import socket
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

import fsspec
import numpy as np
import pandas as pd
import pytest
from conftest import run
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image
from test_cli import zeroshot_args

from clipft import photo_download
from clipft.catalogue import CatalogueError, CatalogueSource, load_catalogue
from clipft.commands.sample_data import make_catalogue
from clipft.photo_download import (
    DownloadError,
    DownloadSettings,
    PhotoDownloads,
    is_url,
)

FAST = DownloadSettings(timeout=0.3, tries=3, backoff=0.01, max_bytes=20 * 1024, max_redirects=5)


def jpeg(seed: int, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


class PhotoServer(BaseHTTPRequestHandler):
    """Routes: /photo/<n>.jpg, /same/<n>.jpg (the same bytes as /photo/<n>.jpg), /slow, /flaky/<name>
    (500 twice, then the photo), /busy (429 once), /always500, /missing, /redirect/<hops>,
    /goto/<quoted URL> (a redirect there), /trickle (a byte every 50 ms), /big (with
    Content-Length), /big-unsized, /page (HTML), /files/<path> (from ``files``)."""

    requests: Counter
    files: Path | None = None

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.requests[self.path] += 1
        parts = [unquote(part) for part in self.path.strip("/").split("/")]
        route = getattr(self, f"_{parts[0].replace('-', '_')}", None)
        if route is None:
            return self.send_error(404)
        route(*parts[1:])

    def _photo(self, name, body=None, length=True, kind="image/jpeg"):
        body = body if body is not None else jpeg(int(name.split(".")[0]))
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    _same = _photo

    def _slow(self):
        time.sleep(1.0)
        self._photo("1")

    def _flaky(self, name):
        if self.requests[self.path] <= 2:
            return self.send_error(500)
        self._photo("2")

    def _busy(self):
        if self.requests[self.path] == 1:
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self._photo("3")

    def _always500(self):
        self.send_error(500)

    def _missing(self):
        self.send_error(404)

    def _redirect(self, hops):
        if int(hops) == 0:
            return self._photo("4")
        self.send_response(302)
        self.send_header("Location", f"/redirect/{int(hops) - 1}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _goto(self, target):
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _trickle(self):
        self.send_response(200)
        self.send_header("Content-Length", "200")
        self.end_headers()
        for byte in jpeg(1)[:200]:  # each byte well within the timeout, the whole far past it
            time.sleep(0.05)
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def _big(self):
        self._photo("5", jpeg(5, size=256))

    def _big_unsized(self):
        self._photo("5", jpeg(5, size=256), length=False)

    def _page(self):
        self._photo("6", b"<html><body>Please log in</body></html>", kind="text/html")

    def _files(self, *path):
        self._photo("0", (self.files / Path(*path)).read_bytes())

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server(tmp_path):
    handler = type("Handler", (PhotoServer,), {"requests": Counter(), "files": tmp_path})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.handle_error = lambda request, address: None  # a client that timed out closed its socket
    httpd.daemon_threads, httpd.block_on_close = True, False  # teardown does not wait for /slow
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.requests = handler.requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def fetch_one(downloads: PhotoDownloads, url: str):
    return downloads.fetch([url])[url]


def test_photos_are_downloaded_once_into_a_content_addressed_cache(tmp_path, server):
    urls = [f"{server.url}/photo/1.jpg", f"{server.url}/photo/2.jpg", f"{server.url}/same/1.jpg"]
    first = PhotoDownloads(tmp_path / "cache", FAST, progress=False).fetch(urls + urls)
    assert list(first) == urls and all(f.reason == "" for f in first.values())
    digest = hashlib.sha256(jpeg(1)).hexdigest()
    assert first[urls[0]].path == tmp_path / "cache" / "downloads" / "blobs" / digest[:2] / digest
    assert first[urls[0]].path.read_bytes() == jpeg(1)
    assert first[urls[2]].path == first[urls[0]].path  # two URLs of one photo share its copy
    assert len(list((tmp_path / "cache" / "downloads" / "blobs").rglob("*"))) == 2 + 2  # 2 folders, 2 photos
    assert sum(server.requests.values()) == 3

    again = PhotoDownloads(tmp_path / "cache", FAST, progress=False).fetch(urls)
    assert again == {url: first[url] for url in urls}
    assert sum(server.requests.values()) == 3  # the second run made no request at all


def test_server_errors_are_retried_with_backoff_and_404_is_not(tmp_path, server):
    downloads = PhotoDownloads(tmp_path, FAST, progress=False)
    flaky = fetch_one(downloads, f"{server.url}/flaky/a")
    assert flaky.path.read_bytes() == jpeg(2) and server.requests["/flaky/a"] == 3
    assert fetch_one(downloads, f"{server.url}/busy").path.read_bytes() == jpeg(3)  # 429, Retry-After: 0
    assert server.requests["/busy"] == 2
    failing = fetch_one(downloads, f"{server.url}/always500")
    assert failing.path is None and failing.reason == "download failed: HTTP 500 Internal Server Error after 3 tries"
    assert server.requests["/always500"] == 3
    missing = fetch_one(downloads, f"{server.url}/missing")
    assert missing.reason == "download failed: HTTP 404 Not Found" and server.requests["/missing"] == 1


def test_a_slow_server_times_out_after_every_try(tmp_path, server):
    started = time.perf_counter()
    slow = fetch_one(PhotoDownloads(tmp_path, FAST, progress=False), f"{server.url}/slow")
    assert slow.path is None and slow.reason == "download failed: timed out after 3 tries"
    assert server.requests["/slow"] == 3 and time.perf_counter() - started < 2.5


def test_redirects_are_followed_up_to_a_limit(tmp_path, server):
    downloads = PhotoDownloads(tmp_path, FAST, progress=False)
    assert fetch_one(downloads, f"{server.url}/redirect/3").path.read_bytes() == jpeg(4)
    endless = fetch_one(downloads, f"{server.url}/redirect/50")
    assert endless.reason == "download failed: more than 5 redirects"
    assert server.requests["/redirect/45"] == 1 and server.requests["/redirect/44"] == 0


def test_oversized_photos_are_refused_with_or_without_a_declared_size(tmp_path, server):
    downloads = PhotoDownloads(tmp_path, FAST, progress=False)
    assert len(jpeg(5, size=256)) > FAST.max_bytes
    declared = fetch_one(downloads, f"{server.url}/big")
    assert declared.path is None and declared.reason.startswith("download failed: larger than 20 kB (")
    unsized = fetch_one(downloads, f"{server.url}/big-unsized")
    assert unsized.path is None and unsized.reason == "download failed: larger than 20 kB"
    assert not (tmp_path / "downloads" / "blobs").exists()


def test_a_page_that_is_not_a_photo_is_refused(tmp_path, server):
    page = fetch_one(PhotoDownloads(tmp_path, FAST, progress=False), f"{server.url}/page")
    assert page.path is None and page.reason == "download failed: not an image (text/html)"


def test_a_failed_url_is_tried_once_per_run_and_again_by_the_next(tmp_path, server):
    url = f"{server.url}/missing"
    downloads = PhotoDownloads(tmp_path, FAST, progress=False)
    assert fetch_one(downloads, url) == fetch_one(downloads, url)
    assert server.requests["/missing"] == 1
    fetch_one(PhotoDownloads(tmp_path, FAST, progress=False), url)  # failures are not cached on disk
    assert server.requests["/missing"] == 2


def test_a_photo_found_once_is_not_looked_up_again_in_the_same_run(tmp_path, server, monkeypatch):
    url = f"{server.url}/photo/1.jpg"
    downloads = PhotoDownloads(tmp_path, FAST, progress=False)
    first = fetch_one(downloads, url)  # downloaded (the validation pass)
    monkeypatch.setattr(downloads, "_url_file", lambda url: pytest.fail("the cache was read again"))
    assert fetch_one(downloads, url) == first and server.requests["/photo/1.jpg"] == 1  # the scoring pass


@pytest.fixture
def memory_store(monkeypatch):
    """memory:// allowed as if it were a cloud store, to test the fsspec path without a network."""
    monkeypatch.setitem(photo_download._SCHEME_PACKAGES, "memory", "fsspec")
    return fsspec.filesystem("memory")


def test_cloud_schemes_are_read_through_fsspec(tmp_path, memory_store):
    memory_store.pipe("/clipft-test/7.jpg", jpeg(7))
    downloads = PhotoDownloads(tmp_path, FAST, progress=False)
    assert fetch_one(downloads, "memory://clipft-test/7.jpg").path.read_bytes() == jpeg(7)
    assert fetch_one(downloads, "memory://clipft-test/none.jpg").reason == "download failed: not found"
    if importlib.util.find_spec("s3fs") is None:
        needs = r"^s3://bucket/1.jpg: reading s3:// photos needs s3fs: pip install s3fs$"
        with pytest.raises(DownloadError, match=needs):
            downloads.fetch(["s3://bucket/1.jpg"])


def test_local_and_other_schemes_are_refused_before_any_download(tmp_path, server):
    os.mkfifo(tmp_path / "fifo.jpg")  # reading it would block for ever
    photo = f"{server.url}/photo/1.jpg"
    downloads = PhotoDownloads(tmp_path / "cache", FAST, progress=False)
    for url in [f"file://{tmp_path}/fifo.jpg", "file:///etc/shadow", "local:///etc/hostname", "memory://x/1.jpg",
                "ftp://127.0.0.1/1.jpg", "tar://1.jpg", "nosuch://x/1.jpg"]:
        scheme = url.split(":")[0]
        with pytest.raises(DownloadError, match=rf"^{url}: unsupported URL scheme '{scheme}': name local photos by path"):
            downloads.fetch([photo, url])
    chained = f"zip://1.jpg::file://{tmp_path}/a.zip"
    with pytest.raises(DownloadError, match=r"^zip://1\.jpg::file://.*: chained URLs \(with '::'\) are not supported"):
        downloads.fetch([photo, chained])
    with pytest.raises(DownloadError, match=r"^s3://b/1\.jpg::file:///etc/shadow: chained URLs"):
        downloads.fetch(["s3://b/1.jpg::file:///etc/shadow"])
    assert sum(server.requests.values()) == 0


@pytest.mark.parametrize("error, reason, tries", [
    (zipfile.BadZipFile("File is not a zip file"), "BadZipFile: File is not a zip file", 1),
    (ValueError("bad bucket name"), "ValueError: bad bucket name", 1),
    (IsADirectoryError("clipft-test"), "a folder, not a photo", 1),
    (PermissionError("denied"), "permission denied", 1),
    (ConnectionResetError("reset by peer"), "ConnectionResetError: reset by peer after 3 tries", 3),
])
def test_fsspec_errors_fail_the_photo_and_only_passing_ones_are_retried(tmp_path, memory_store, monkeypatch,
                                                                       error, reason, tries):
    calls = []

    def failing_size(self, path):
        calls.append(path)
        raise error

    monkeypatch.setattr(MemoryFileSystem, "size", failing_size)
    fetched = fetch_one(PhotoDownloads(tmp_path, FAST, progress=False), "memory://clipft-test/1.jpg")
    assert fetched.path is None and fetched.reason == f"download failed: {reason}" and len(calls) == tries


def test_redirects_away_from_http_are_refused_without_following_them(tmp_path, server):
    (tmp_path / "secret.jpg").write_bytes(jpeg(9))  # a photo it could read, were file:// followed
    listener = socket.create_server(("127.0.0.1", 0))  # an ftp:// target that would see a connection
    listener.settimeout(0)
    ftp = f"ftp://127.0.0.1:{listener.getsockname()[1]}/x"
    downloads = PhotoDownloads(tmp_path / "cache", FAST, progress=False)
    try:
        for target in ["file:///etc/hostname", f"file://{tmp_path}/secret.jpg", ftp, "ftp://127.0.0.1/x"]:
            fetched = fetch_one(downloads, f"{server.url}/goto/{quote(target, safe='')}")
            assert fetched.path is None
            assert fetched.reason == f"download failed: redirect to a non-HTTP URL refused ({target})"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    assert not (tmp_path / "cache" / "downloads" / "blobs").exists()


def test_a_server_trickling_bytes_is_abandoned_at_the_deadline(tmp_path, server):
    started = time.perf_counter()
    trickled = fetch_one(PhotoDownloads(tmp_path, FAST, progress=False), f"{server.url}/trickle")
    assert trickled.path is None and trickled.reason == "download failed: too slow: not finished within 1.2 s"
    assert server.requests["/trickle"] == 1 and time.perf_counter() - started < 2.5


def test_urls_are_told_from_paths():
    assert is_url("https://cdn.example.com/a.jpg") and is_url("s3://bucket/a.jpg") and is_url("HTTP://X/a.jpg")
    assert not is_url("C://photos/a.jpg") and not is_url("images/a.jpg") and not is_url("/abs/http://a.jpg")


def write_url_catalogue(folder: Path, server, n: int = 6, bad_row: int | None = None) -> tuple[Path, pd.DataFrame]:
    """A generated catalogue whose image column holds URLs of its photos on ``server``."""
    csv = make_catalogue(folder, n=n, size=32, seed=3)
    frame = pd.read_csv(csv, dtype=str)
    relative = frame["image"].map(lambda p: (csv.parent / p).relative_to(server.RequestHandlerClass.files).as_posix())
    frame["image"] = server.url + "/files/" + relative
    if bad_row is not None:
        frame.loc[bad_row, "image"] = f"{server.url}/missing"
    frame.to_csv(csv, index=False)
    return csv, frame


def test_a_catalogue_names_photos_by_url_and_reports_failures_by_url(tmp_path, server):
    csv, frame = write_url_catalogue(tmp_path / "cat", server, bad_row=2)
    catalogue = load_catalogue(csv, downloads=PhotoDownloads(tmp_path / "cache", FAST, progress=False))
    assert catalogue.image_names == frame["image"].tolist()
    good = [row for row in range(len(frame)) if row != 2]
    assert all(catalogue.image_paths[r].parent.parent.name == "blobs" for r in good)
    original = csv.parent / "images" / Path(frame.loc[0, "image"]).name
    assert catalogue.image_paths[0].read_bytes() == original.read_bytes()
    [bad] = catalogue.missing
    assert (bad.row, bad.line, bad.path) == (2, 4, f"{server.url}/missing")
    assert bad.reason == "download failed: HTTP 404 Not Found"


def test_an_image_dir_that_is_a_url_names_photos_by_id(tmp_path, server):
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "a 1.jpg").write_bytes(jpeg(8))
    pd.DataFrame({"id": ["a 1"]}).to_csv(tmp_path / "ids.csv", index=False)
    catalogue = load_catalogue(tmp_path / "ids.csv", image_dir=f"{server.url}/files/shop/",
                               downloads=PhotoDownloads(tmp_path / "cache", FAST, progress=False))
    assert catalogue.image_names == [f"{server.url}/files/shop/a%201.jpg"] and not catalogue.missing
    assert catalogue.image_paths[0].read_bytes() == jpeg(8)


def test_an_unwritable_download_cache_stops_the_run_naming_it(tmp_path, server):
    csv, _ = write_url_catalogue(tmp_path / "cat", server, n=2)
    (tmp_path / "cache").write_text("a file, not a folder")
    unusable = r"catalogue\.csv: .*downloads: cannot write downloaded photos there \(Not a directory\); pass --cache-dir"
    with pytest.raises(CatalogueError, match=unusable):
        CatalogueSource(str(csv), cache_dir=str(tmp_path / "cache")).load()


def test_zeroshot_on_a_catalogue_of_urls(tmp_path, server):
    csv, frame = write_url_catalogue(tmp_path / "cat", server, bad_row=2)
    bad_url = f"{server.url}/missing"
    stopped = run(zeroshot_args(csv, tmp_path / "stop", tmp_path / "cache"), expect=1)
    assert f"line 4: {bad_url}: download failed: HTTP 404 Not Found" in stopped.output
    assert "--skip-bad" in stopped.output and "Encoding" not in stopped.output  # before any work

    downloaded = sum(server.requests.values())
    assert downloaded == len(frame)  # each URL once
    skipped = run(zeroshot_args(csv, tmp_path / "out", tmp_path / "cache", "--skip-bad"))
    assert "scored 5 of 6 products" in skipped.output and "skipped 1" in skipped.output
    listed = pd.read_csv(tmp_path / "out" / "skipped.csv", dtype=str)
    assert listed[["id", "path", "reason"]].values.tolist() == [[frame.loc[2, "id"], bad_url,
                                                                  "download failed: HTTP 404 Not Found"]]
    # only the failed URL was asked again, and once though validation and scoring both read it
    assert sum(server.requests.values()) == downloaded + 1
    assert len([p for p in (tmp_path / "cache" / "downloads" / "blobs").rglob("*") if p.is_file()]) == 5
