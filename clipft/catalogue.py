"""Product catalogues: a CSV (one row per product) with an image column, attribute columns and
an optional title column, and the dataset that decodes its photos.

The image column holds either a path (absolute, or relative to the CSV's folder) or an id,
resolved as ``<image_dir>/<id>.jpg`` (``image_dir`` defaults to ``images/`` beside the CSV):
the Kaggle Fashion Product Images layout (``styles.csv`` + ``images/``) works with no options.
A URL (``https://...``, ``s3://...``; also an ``image_dir`` that is one) is downloaded into the
cache (:mod:`clipft.photo_download`) and reported by its URL.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from .csvfile import CsvError, read_csv_frames, read_header
from .defaults import CHUNK_SIZE
from .photo_download import DownloadError, PhotoDownloads, is_url
from .vectors import blank_cells

IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename")
ID_COLUMNS = ("id",)
TITLE_COLUMNS = ("title", "productDisplayName", "name")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message names the file, row or column."""


@dataclass(frozen=True)
class BadImage:
    row: int  # 0-based position in the catalogue
    line: int  # line number in the CSV (header is line 1)
    path: str
    reason: str

    def describe(self) -> str:
        return f"line {self.line}: {self.path}: {self.reason}"


class BadImagesError(CatalogueError):
    """Photos of a catalogue that are missing or cannot be decoded (``bad``, by row). A
    CatalogueError: the fix is the catalogue's (or --skip-bad), whether the photos were found
    missing when it was read or failed to decode while the cache layer encoded them."""

    def __init__(self, source: Path, bad: list[BadImage], show: int = 10):
        listed = "\n  ".join(b.describe() for b in bad[:show])
        more = f"\n  ... and {len(bad) - show} more" if len(bad) > show else ""
        super().__init__(f"{source}: {len(bad)} image(s) missing or unreadable:\n  {listed}{more}\n"
                         f"Fix them, or pass --skip-bad to skip these rows (they are listed in skipped.csv).")
        self.source, self.bad = source, list(bad)


@dataclass
class Catalogue:
    """A loaded catalogue. ``frame`` keeps the CSV's columns as strings (missing values are NaN)."""

    source: Path
    frame: pd.DataFrame
    image_paths: list[Path]
    ids: list[str]
    lines: list[int]  # CSV line of each row, for error messages
    title_column: str | None = None
    missing: list[BadImage] = field(default_factory=list)
    image_names: list[str] | None = None  # each photo as the user named it (a URL, not its cached copy)

    def __len__(self) -> int:
        return len(self.frame)

    def image_name(self, row: int) -> str:
        """The row's photo as messages and reports should show it."""
        return self.image_names[row] if self.image_names is not None else str(self.image_paths[row])

    def photo_reference(self, row: int) -> str:
        """The row's photo as a file written for later reads names it: its URL, or its absolute
        path (a relative one would depend on the folder the command ran in)."""
        name = self.image_name(row)
        return name if is_url(name) else os.path.abspath(name)

    def titles(self) -> list[str | None]:
        if self.title_column is None:
            return [None] * len(self)
        column = self.frame[self.title_column].astype(object)
        values = column.astype(str).to_numpy(dtype=object)
        values[blank_cells(column)] = None
        return values.tolist()


def _pick_column(frame: pd.DataFrame, wanted: str | None, candidates, what: str, source: Path) -> str | None:
    if wanted is not None:
        if wanted not in frame.columns:
            raise CatalogueError(f"{source}: no {what} column '{wanted}' (columns: {', '.join(frame.columns)})")
        return wanted
    return next((c for c in candidates if c in frame.columns), None)


def _read_error(source: Path, err: Exception) -> CatalogueError:
    if isinstance(err, FileNotFoundError):
        return CatalogueError(f"{source}: catalogue file not found")
    if isinstance(err, UnicodeDecodeError):
        return CatalogueError(f"{source}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8")
    return CatalogueError(f"{source}: cannot parse CSV: {err}")


_READ_ERRORS = (FileNotFoundError, IsADirectoryError, pd.errors.ParserError, pd.errors.EmptyDataError,
                UnicodeDecodeError)


@contextlib.contextmanager
def _catalogue_errors(source: Path):
    """Every way reading a catalogue CSV can fail, as one CatalogueError naming the file."""
    try:
        yield
    except CsvError as err:
        raise CatalogueError(str(err)) from None
    except _READ_ERRORS as err:
        raise _read_error(source, err) from None


def _frames(source: Path, chunk_rows: int | None, sep: str | None, skip_bad: bool,
            title_column: str | None):
    with _catalogue_errors(source):
        yield from read_csv_frames(source, chunk_rows, sep, skip_bad, TITLE_COLUMNS + (title_column,))


def read_catalogue_frame(source: Path, sep: str | None = None, skip_bad: bool = False,
                         title_column: str | None = None) -> pd.DataFrame:
    """The whole CSV as string columns indexed by CSV line; a file without rows is an error."""
    frame = pd.concat(list(_frames(source, None, sep, skip_bad, title_column)))
    if frame.empty:
        raise CatalogueError(f"{source}: catalogue has no rows, only a header")
    return frame


def load_catalogue(
    csv_path: str | os.PathLike,
    image_column: str | None = None,
    id_column: str | None = None,
    title_column: str | None = None,
    image_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    sep: str | None = None,
    skip_bad: bool = False,
    downloads: PhotoDownloads | None = None,
) -> Catalogue:
    """Read a catalogue CSV and resolve its image paths; missing image files are listed in ``missing``.

    ``limit`` keeps a reproducible random sample of that many rows (in catalogue order);
    ``sep`` defaults to the separator the header uses; ``skip_bad`` skips malformed lines;
    ``downloads`` fetches photos named by URL (default: into the embedding cache's folder).
    """
    source = Path(csv_path)
    frame = read_catalogue_frame(source, sep, skip_bad, title_column)
    if limit is not None and limit < len(frame):
        rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=limit, replace=False))
        frame = frame.iloc[rows]
    catalogue = catalogue_from_frame(frame, source, image_column, id_column, title_column, image_dir, downloads)
    check_unique_ids(source, catalogue.ids, catalogue.lines)
    return catalogue


def iter_catalogue(
    csv_path: str | os.PathLike,
    chunk_rows: int,
    image_column: str | None = None,
    id_column: str | None = None,
    title_column: str | None = None,
    image_dir: str | os.PathLike | None = None,
    sep: str | None = None,
    skip_bad: bool = False,
    downloads: PhotoDownloads | None = None,
):
    """The catalogue as consecutive :class:`Catalogue` chunks of ``chunk_rows`` rows, read as
    they are needed, for catalogues larger than memory. Row numbers and ``missing`` are those
    of each chunk; ``source`` and CSV lines stay those of the whole file."""
    source, downloads = Path(csv_path), downloads or PhotoDownloads()  # one for all chunks: a failed URL is tried once
    empty = True
    for frame in _frames(source, chunk_rows, sep, skip_bad, title_column):
        if len(frame):
            empty = False
            yield catalogue_from_frame(frame, source, image_column, id_column, title_column, image_dir, downloads)
    if empty:
        raise CatalogueError(f"{source}: catalogue has no rows, only a header")


def check_unique_ids(source: Path, ids: list[str], lines: list[int], show: int = 5) -> None:
    """Stop when an id names two products: predictions, reviews and imported labels are keyed by it."""
    frame = pd.DataFrame({"id": ids, "line": lines})
    repeated = frame[frame.duplicated("id", keep=False)]
    if repeated.empty:
        return
    groups = repeated.groupby("id", sort=False)["line"].apply(lambda ls: ", ".join(map(str, ls)))
    listed = "; ".join(f"id {i} on lines {ls}" for i, ls in list(groups.items())[:show])
    more = f"; ... and {len(groups) - show} more" if len(groups) > show else ""
    raise CatalogueError(f"{source}: {len(groups)} id(s) appear more than once: {listed}{more}")


def catalogue_from_frame(frame: pd.DataFrame, source: Path, image_column: str | None = None,
                         id_column: str | None = None, title_column: str | None = None,
                         image_dir: str | os.PathLike | None = None,
                         downloads: PhotoDownloads | None = None) -> Catalogue:
    """A catalogue from rows of ``source`` (pandas index: the CSV line of each row); photos
    named by URL are fetched by ``downloads`` (default: into the embedding cache's folder)."""
    image_col = _pick_column(frame, image_column, IMAGE_COLUMNS, "image", source)
    id_col = _pick_column(frame, id_column, ID_COLUMNS, "id", source)
    title_col = _pick_column(frame, title_column, TITLE_COLUMNS, "title", source)
    if image_col is None and id_col is None:
        raise CatalogueError(
            f"{source}: no image column; name one with --image-column "
            f"(looked for {', '.join(IMAGE_COLUMNS + ID_COLUMNS)})"
        )
    lines = frame.index.tolist()
    frame = frame.reset_index(drop=True)

    refs = frame[image_col] if image_col is not None else frame[id_col]
    image_dir = os.fspath(image_dir) if image_dir is not None else None
    # Catalogues repeat photos: each distinct reference is resolved, checked and downloaded once.
    located = {ref: None if pd.isna(ref) or not str(ref).strip()
               else _image_location(str(ref).strip(), source.parent, image_dir, image_col is not None)
               for ref in refs.unique()}
    fetched = _fetch(source, [where for where in located.values() if isinstance(where, str)], downloads)
    resolved = {ref: _resolve_image(where, fetched, image_col or id_col) for ref, where in located.items()}
    paths = refs.map(lambda ref: resolved[ref][0]).tolist()
    names = refs.map(lambda ref: resolved[ref][2]).tolist() if fetched else None  # URLs, not cached copies
    unusable = [ref for ref, (_, reason, _) in resolved.items() if reason]
    missing = [BadImage(int(row), lines[row], resolved[refs.iloc[row]][2], resolved[refs.iloc[row]][1])
               for row in np.flatnonzero(refs.isin(unusable).to_numpy())] if unusable else []

    ids = frame[id_col].tolist() if id_col is not None else [str(line) for line in lines]
    return Catalogue(source, frame, paths, [str(i) for i in ids], lines, title_col, missing, names)


@dataclass
class CatalogueSource:
    """How to read a catalogue: whole (a seeded ``limit`` sample) or in chunks of ``chunk_size`` rows."""

    data: str
    image_column: str | None = None
    id_column: str | None = None
    title_column: str | None = None
    image_dir: str | None = None
    limit: int | None = None
    seed: int = 0
    chunk_size: int = CHUNK_SIZE
    sep: str | None = None
    skip_bad: bool = False  # skip malformed lines (missing photos are skipped by the commands)
    cache_dir: str | None = None  # photos named by URL are downloaded under it (default: the embedding cache's)
    _downloads: PhotoDownloads | None = field(default=None, init=False, repr=False, compare=False)

    def load(self) -> Catalogue:
        return load_catalogue(self.data, self.image_column, self.id_column, self.title_column, self.image_dir,
                              self.limit, self.seed, self.sep, self.skip_bad, self.downloads())

    def chunks(self):
        # --limit samples the whole file, so it is read at once; otherwise chunk by chunk.
        if self.limit is not None:
            return [self.load()]
        return iter_catalogue(self.data, self.chunk_size, self.image_column, self.id_column, self.title_column,
                              self.image_dir, self.sep, self.skip_bad, self.downloads())

    def downloads(self) -> PhotoDownloads:
        # one for every pass over the catalogue (validation, then scoring): a failed URL is tried once
        if self._downloads is None:
            self._downloads = PhotoDownloads(self.cache_dir)
        return self._downloads

    def header(self) -> list[str]:
        with _catalogue_errors(Path(self.data)):
            return read_header(Path(self.data), self.sep)


def _resolve_image(where: str | Path | None, fetched: dict, column: str):
    """(the photo's path, why it is unusable or "", the photo as reported) for an empty cell
    (None), a URL (its downloaded copy, reported by the URL) or a path."""
    if where is None:
        return Path(), f"empty {column}", ""
    if isinstance(where, str):
        return fetched[where].path or Path(), fetched[where].reason, where
    return where, "" if where.is_file() else "file not found", str(where)


@functools.lru_cache(maxsize=1 << 20)
def _image_location(ref: str, base: Path, image_dir: str | None, is_path: bool) -> str | Path:
    """A URL as given; a path (in the image column, or an image file name) as given, relative to
    the CSV; an id as ``<image_dir>/<id>.jpg``, a URL when ``image_dir`` is one."""
    # a chunked catalogue names the same photos chunk after chunk: build each location once
    if is_url(ref):
        return ref
    if is_path or ref.lower().endswith(_IMAGE_SUFFIXES):
        return Path(ref) if os.path.isabs(ref) else base / ref
    if image_dir is not None and is_url(image_dir):
        return f"{image_dir.rstrip('/')}/{quote(ref)}.jpg"
    return (Path(image_dir) if image_dir is not None else base / "images") / f"{ref}.jpg"


def _fetch(source: Path, urls: list[str], downloads: PhotoDownloads | None) -> dict:
    """Each URL's downloaded photo or why it failed; a problem with every download (a package
    to install, an unusable cache) stops the run as one error naming the catalogue."""
    if not urls:
        return {}
    try:
        return (downloads or PhotoDownloads()).fetch(urls)
    except DownloadError as err:
        raise CatalogueError(f"{source}: {err}") from None


@dataclass
class CatalogueSummary:
    """What a pass over a catalogue too large to hold found: its size and its missing photos."""

    source: Path
    rows: int
    title_column: str | None
    missing: list[BadImage]  # row: position in the whole catalogue


def validate_catalogue(chunks, skip_bad: bool) -> CatalogueSummary:
    """One pass over a catalogue's chunks (columns parsed, every image path checked); stops
    before any work when photos are missing, unless the user asked to skip them."""
    rows, source, title_column, missing, ids, lines = 0, None, None, [], [], []
    for chunk in chunks:
        source, title_column = chunk.source, chunk.title_column
        missing += [BadImage(rows + b.row, b.line, b.path, b.reason) for b in chunk.missing]
        rows += len(chunk)
        ids += chunk.ids
        lines += chunk.lines
    check_unique_ids(source, ids, lines)
    summary = CatalogueSummary(source, rows, title_column, missing)
    check_images(summary, skip_bad)
    return summary


def check_images(catalogue: Catalogue | CatalogueSummary, skip_bad: bool, show: int = 10) -> None:
    """Stop before any work when images are missing, unless the user asked to skip them."""
    if catalogue.missing and not skip_bad:
        raise BadImagesError(catalogue.source, catalogue.missing, show)


def to_rgb(img: Image.Image) -> Image.Image:
    """A photo as the model should see it: turned as its EXIF orientation says, 16-bit grey
    scaled to 8 bits (not clipped to white), transparency composited on white (product
    cut-outs sit on a white page, not a black one)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


class ImageFiles(torch.utils.data.Dataset):
    """Decodes image files; a file that fails to decode yields ``None`` and the reason instead
    of raising, so that one corrupt photo never kills a long pass."""

    def __init__(self, paths, transform):
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            with Image.open(self.paths[index]) as img:
                return index, self.transform(to_rgb(img)), None
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            return index, None, f"cannot decode image ({type(err).__name__}: {err})"


def collate_decoded(items):
    """Batch the decoded images and keep the failures aside."""
    good = [(i, t) for i, t, err in items if err is None]
    failed = [(i, err) for i, _, err in items if err is not None]
    indices = [i for i, _ in good]
    tensors = torch.stack([t for _, t in good]) if good else None
    return indices, tensors, failed
