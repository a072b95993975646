"""The review queue of a calibrated labeller's outputs: every label sent to a person
(review.csv), the same queue as Label Studio tasks with the model's pre-annotations, and the
labelling interface they open in."""
from __future__ import annotations

import base64
import io
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
from PIL import Image

from ..catalogue import Catalogue, CatalogueError
from ..fileio import atomic_write, write_json
from ..photo_download import is_url
from .results import TOP_K

log = logging.getLogger(__name__)
PRODUCT_FIELD = "clipft_id"  # the task data field naming the product (import-labels keys answers by it)


def review_frame(catalogue: Catalogue, rows: np.ndarray, predicted: pd.DataFrame, heads: dict,
                 statuses=("review",)) -> pd.DataFrame:
    """One row per (product, attribute) sent to review (or of another of ``statuses``): id, image,
    title, attribute, the predicted value, its probability and top 3 (``predicted``:
    :func:`predictions_frame`'s rows)."""
    titles, parts = catalogue.titles(), []
    for name, head in heads.items():
        mine = np.flatnonzero(np.isin(predicted[f"{name}_status"].to_numpy(), statuses))
        parts.append(pd.DataFrame({
            "id": predicted["id"].to_numpy()[mine], "image": [catalogue.image_name(rows[i]) for i in mine],
            "title": [titles[rows[i]] for i in mine], "attribute": name, "column": head.spec.column,
            "predicted": predicted[name].to_numpy()[mine], "probability": predicted[f"{name}_prob"].to_numpy()[mine],
            "top3": predicted[f"{name}_top{TOP_K}"].to_numpy()[mine]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


LOCAL_FILES = "/data/local-files/?d="  # where Label Studio serves files under its document root
EMBED_LIMIT = 500  # tasks: beyond it embedded photos make an export too large for Label Studio to import well
THUMBNAIL = 256  # pixels, the longer side of an embedded photo


class PhotoReferenceError(CatalogueError):
    """A photo that the chosen Label Studio set-up cannot show (outside --document-root)."""


@dataclass(frozen=True)
class TaskPhotos:
    """How review tasks name their photos for Label Studio. URLs always stay as they are; a file
    is named behind ``prefix``, relative to ``document_root`` when it is given (Label Studio's
    local files serving, whose default prefix is :data:`LOCAL_FILES`), or embedded as a JPEG
    thumbnail with ``embed`` (no set-up at all, for small queues)."""

    prefix: str = ""
    document_root: str | None = None
    embed: bool = False

    def reference(self, image: str) -> str:
        if is_url(image):
            return image
        if self.embed:
            return thumbnail_uri(image)
        if self.document_root is None:
            return self.prefix + image
        return (self.prefix or LOCAL_FILES) + quote(relative_to_root(image, self.document_root))

    def for_queue(self, tasks: int) -> TaskPhotos:
        """These settings for a queue of ``tasks``: too many to embed falls back to references."""
        if not self.embed or tasks <= EMBED_LIMIT:
            return self
        log.warning("review_labelstudio.json: %d tasks, more than the %d whose photos are embedded; photos are "
                    "named by path instead (serve them with --document-root)", tasks, EMBED_LIMIT)
        return replace(self, embed=False)


def relative_to_root(image: str, root: str) -> str:
    """The photo's path under the document root (``/`` separated), whether the catalogue named it
    relative or absolute; Label Studio refuses absolute paths and anything outside its root."""
    relative = os.path.relpath(os.path.abspath(image), os.path.abspath(root))
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        raise PhotoReferenceError(f"{image}: photo outside --document-root {root}; give the folder that holds "
                                  f"every photo of the catalogue")
    return Path(relative).as_posix()


def thumbnail_uri(image: str) -> str:
    """The photo as a ``data:`` URI of a JPEG thumbnail, which Label Studio shows with no storage."""
    with Image.open(image) as photo:
        photo = photo.convert("RGB")
        photo.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def task_image(image: str, image_url_prefix: str) -> str:
    """A photo as a Label Studio task names it: a URL as it is, a path behind the prefix."""
    return TaskPhotos(image_url_prefix).reference(image)


def label_studio_tasks(review: pd.DataFrame, model_version: str, photos: TaskPhotos | str = "",
                       separators: dict[str, str] | None = None) -> list[dict]:
    """The review queue as Label Studio tasks, one per product: the photo, the title, and the
    model's pre-annotation of each attribute sent to review (a ``choices`` result per column;
    ``separators``: the multi-valued columns, whose predicted values are several choices).
    ``clipft_id`` carries the product id through every export format (JSON_MIN and CSV replace a
    ``data.id`` by Label Studio's own task id; ``id`` stays for older readers of the JSON)."""
    photos = TaskPhotos(photos) if isinstance(photos, str) else photos
    separators = separators or {}
    tasks = []
    for product, group in review.groupby("id", sort=False):
        first = group.iloc[0]
        results = [{"from_name": row.column, "to_name": "image", "type": "choices",
                    "value": {"choices": str(row.predicted).split(separators[row.column]) if row.column in separators
                              else [row.predicted]}} for row in group.itertuples()]
        title = "" if first["title"] is None or pd.isna(first["title"]) else str(first["title"])
        tasks.append({"data": {PRODUCT_FIELD: str(product), "id": str(product),
                               "image": photos.reference(str(first["image"])), "title": title},
                      "predictions": [{"model_version": model_version, "score": float(group["probability"].min()),
                                       "result": results}]})
    return tasks


def label_studio_config(heads: dict) -> str:
    """Label Studio labelling interface: the photo, the title, and one question per attribute
    (several choices for a multi-valued one)."""
    blocks = ['<View>', '  <Image name="image" value="$image"/>', '  <Text name="title" value="$title"/>']
    for head in heads.values():
        # quoteattr: class and column names are any text ("Black & White", quotes)
        blocks.append(f'  <Header value={quoteattr(head.spec.attribute)}/>')
        choice = "multiple" if head.spec.multi else "single"
        blocks.append(f'  <Choices name={quoteattr(head.spec.column)} toName="image" choice="{choice}" showInline="true">')
        blocks += [f'    <Choice value={quoteattr(c)}/>' for c in head.spec.classes]
        blocks.append('  </Choices>')
    return "\n".join(blocks + ['</View>']) + "\n"


def write_review_outputs(out: Path, review: pd.DataFrame, heads: dict, model_version: str,
                         photos: TaskPhotos | str = "") -> None:
    """review.csv (most uncertain first), the same queue as Label Studio tasks whose photos are
    named as ``photos`` says (a string: the old image URL prefix), and the labelling config."""
    photos = TaskPhotos(photos) if isinstance(photos, str) else photos
    review = review.sort_values("probability", kind="stable").reset_index(drop=True) if len(review) else review
    with atomic_write(out / "review.csv") as f:
        review.to_csv(f, index=False)
    products = review["id"].nunique() if len(review) else 0
    separators = {h.spec.column: h.spec.separator for h in heads.values() if h.spec.multi}
    write_json(out / "review_labelstudio.json",
               label_studio_tasks(review, model_version, photos.for_queue(products), separators) if len(review) else [])
    with atomic_write(out / "labelstudio_config.xml") as f:
        f.write(label_studio_config(heads))
