"""``clipft suggest``: the products of a catalogue most worth a person's time to label next,
chosen by a strategy of :mod:`clipft.active` on the labeller's calibrated probabilities and
product embeddings, written as Label Studio tasks with the labeller's pre-annotations.

Products whose every applying attribute already has a label in the catalogue are not suggested
again; they count as labelled, so the diversity strategies look for what they do not cover."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch.nn.functional as F

from ..active import Pool, product_uncertainty, select
from ..applicability import check_dependencies
from ..catalogue import CatalogueError, CatalogueSource, check_images
from ..fileio import atomic_write, output_folder, write_json
from ..fusion import batched_parts, combine
from ..labeller import Labeller
from ..reporting.results import predictions_frame
from ..reporting.review import TaskPhotos, label_studio_config, label_studio_tasks, review_frame
from ..scoring import EncodeOptions, ScoredChunk, score_chunk
from ..vectors import blank_cells
from .predict import title_column_for

DEFAULT_STRATEGY = "typiclust"
OUTPUTS = ("suggestions.csv", "suggest_labelstudio.json", "labelstudio_config.xml", "suggest.json")


@dataclass
class Suggestions:
    chosen: pd.DataFrame  # suggestions.csv
    picks: np.ndarray  # the chosen products' positions among the scored rows, best first
    candidates: int  # unlabelled products it chose from
    labelled: int  # products already labelled (kept out, and covered by the diversity strategies)


def product_embeddings(labeller: Labeller, scored: ScoredChunk) -> np.ndarray:
    """Unit embeddings of the scored rows as the labeller sees them (photo, title or fused), from
    the product features scoring computed."""
    features = scored.features
    parts = batched_parts(features, np.asarray(scored.rows, dtype=int), labeller.batch_size)
    return F.normalize(combine(parts, features.inputs, features.weight), dim=-1).numpy()


def labelled_mask(labeller: Labeller, scored: ScoredChunk) -> np.ndarray:
    """Per scored row, whether the catalogue labels every attribute that applies to it (False
    where it has no column for one)."""
    frame, done = scored.catalogue.frame, np.ones(len(scored.rows), dtype=bool)
    for name, head in labeller.heads.items():
        column = head.spec.column
        if column not in frame.columns:
            return np.zeros(len(scored.rows), dtype=bool)
        done &= ~(blank_cells(frame[column].iloc[scored.rows]) & scored.applies[name])
    return done


def suggestion_frame(labeller: Labeller, scored: ScoredChunk, picks: np.ndarray, uncertainty: np.ndarray,
                     strategy: str) -> pd.DataFrame:
    """rank, id, image, title, the strategy and the product's uncertainty (1: a coin toss)."""
    catalogue, rows = scored.catalogue, scored.rows[picks]
    titles = catalogue.titles()
    return pd.DataFrame({"rank": np.arange(1, len(picks) + 1), "id": [catalogue.ids[r] for r in rows],
                         "image": [catalogue.image_name(r) for r in rows], "title": [titles[r] for r in rows],
                         "strategy": strategy, "uncertainty": np.round(uncertainty[picks], 4)})


def prediction_rows(labeller: Labeller, scored: ScoredChunk, picks: np.ndarray) -> pd.DataFrame:
    """The chosen products' labels, by predict's rule (:func:`predictions_frame`), in the shape of
    a review queue (one row per product and applying attribute) and in rank order, which
    :func:`label_studio_tasks` turns into pre-annotated tasks."""
    chosen = scored.take(picks)
    predicted = predictions_frame(chosen, labeller.heads)
    queue = review_frame(scored.catalogue, chosen.rows, predicted, labeller.heads, statuses=("auto", "review"))
    rank = dict(zip(predicted["id"], range(len(predicted))))
    return queue.sort_values("id", key=lambda ids: ids.map(rank), kind="stable").reset_index(drop=True)


def choose(labeller: Labeller, scored: ScoredChunk, budget: int, strategy: str, seed: int) -> Suggestions:
    """The ``budget`` unlabelled products ``strategy`` picks, best first."""
    done = labelled_mask(labeller, scored)
    candidates = np.flatnonzero(~done)
    if len(candidates) == 0:
        raise CatalogueError(f"{scored.catalogue.source}: every product is labelled already: nothing to suggest")
    embeddings = product_embeddings(labeller, scored)
    pool = Pool(embeddings[candidates], {a: p[candidates] for a, p in scored.proba.items()},
                {a: m[candidates] for a, m in scored.applies.items()}, embeddings[done])
    picks = candidates[select(strategy, pool, budget, seed)]
    uncertainty = np.zeros(len(scored.rows))
    uncertainty[candidates] = product_uncertainty(pool)
    return Suggestions(suggestion_frame(labeller, scored, picks, uncertainty, strategy), picks, len(candidates),
                       int(done.sum()))


def run_suggest(labeller: Labeller, source: CatalogueSource, out: str | Path, budget: int,
                options: EncodeOptions = EncodeOptions(), strategy: str = DEFAULT_STRATEGY, seed: int = 0,
                photos: TaskPhotos | str = "", model_version: str = "clipft", progress: bool = True) -> Suggestions:
    """Score the catalogue, choose ``budget`` products, and write suggestions.csv, the Label
    Studio tasks and interface, and suggest.json (what was chosen from and how)."""
    if labeller.calibrated:  # a run knows its title column; zero-shot takes the one given
        source.title_column = title_column_for(source, labeller)
    specs = [head.spec for head in labeller.heads.values()]
    check_dependencies(specs, source.header(), source.data)
    with output_folder(out, OUTPUTS) as stage:
        catalogue = source.load()
        check_images(catalogue, options.skip_bad)
        scored = score_chunk(labeller, catalogue, options, progress=progress)
        if len(scored.rows) == 0:
            raise CatalogueError(f"{source.data}: catalogue has no usable rows")
        found = choose(labeller, scored, budget, strategy, seed)
        write_outputs(stage, labeller, found, prediction_rows(labeller, scored, found.picks),
                      photos, {"strategy": strategy, "seed": seed, "budget": budget, "data": str(source.data),
                                         "model_version": model_version})
    return found


def write_outputs(stage: Path, labeller: Labeller, found: Suggestions, predictions: pd.DataFrame,
                  photos: TaskPhotos | str, info: dict) -> None:
    with atomic_write(stage / "suggestions.csv") as f:
        found.chosen.to_csv(f, index=False)
    photos = TaskPhotos(photos) if isinstance(photos, str) else photos
    separators = {h.spec.column: h.spec.separator for h in labeller.heads.values() if h.spec.multi}
    tasks = predictions["id"].nunique() if len(predictions) else 0
    write_json(stage / "suggest_labelstudio.json",
               label_studio_tasks(predictions, info["model_version"], photos.for_queue(tasks), separators))
    with atomic_write(stage / "labelstudio_config.xml") as f:
        f.write(label_studio_config(labeller.heads))
    write_json(stage / "suggest.json", info | {"chosen": len(found.chosen), "candidates": found.candidates,
                                               "already_labelled": found.labelled})
