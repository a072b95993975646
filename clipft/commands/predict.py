"""``clipft predict``: label a catalogue with a finished run (:mod:`clipft.labeller`), chunk by
chunk, and say which labels can be trusted (auto) and which a person should check (review)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..applicability import check_dependencies
from ..calibration import GUARANTEE
from ..catalogue import CatalogueError, CatalogueSource, validate_catalogue
from ..distributed import init_distributed
from ..fileio import rank_output_folder
from ..labeller import Labeller
from ..models import resolve_device
from ..precision import encoding_precision, resolve_precision
from ..prior_shift import em_prior
from ..prompts import warn_missing_columns
from ..reporting.review import TaskPhotos
from ..reporting.scoring_outputs import OUTPUTS, PREVIOUS, ScoringTotals, label_catalogue
from ..scoring import EncodeOptions, score_chunk

log = logging.getLogger(__name__)


def load_labeller(run: str | Path, device: str, cache_dir, attributes=None, target_precision=None,
                  guarantee=None) -> Labeller:
    """The run's labeller, limited to ``attributes`` and re-thresholded at ``target_precision``
    (default: the run's) with probability ``guarantee`` when either is given."""
    labeller = Labeller.load(run, resolve_device(device), cache_dir)
    if attributes:
        labeller = labeller.select(attributes)
    if target_precision is None and guarantee is None:
        return labeller
    target = target_precision or next(iter(labeller.heads.values())).calibration.target_precision
    return labeller.with_target_precision(target, guarantee or GUARANTEE)


def title_column_for(source: CatalogueSource, labeller: Labeller) -> str | None:
    """The catalogue's title column: as given, else the one the run was trained with when the
    file has it. A run trained on titles whose catalogue has none says so: it still labels, but
    on photos alone, and less accurately than its metrics promise."""
    if source.title_column is not None or labeller.inputs == "image":
        return source.title_column
    header = source.header()
    if labeller.title_column in header:
        return labeller.title_column
    if labeller.inputs == "text":
        raise CatalogueError(f"{source.data}: no title column '{labeller.title_column}', and the run labels titles "
                             f"only; pass --title-column with the column that holds them")
    log.warning("%s: no title column '%s', which the run was trained with: every product is labelled on its photo "
                "alone, less accurately than the run's metrics say (pass --title-column if the titles are under "
                "another name)", source.data, labeller.title_column)
    return None


def adapted_to_catalogue(labeller: Labeller, source: CatalogueSource, options: EncodeOptions, main: bool) -> Labeller:
    """The labeller with each single-valued attribute's class prior estimated, without labels, on
    the catalogue's first chunk (EM, :func:`clipft.prior_shift.em_prior`), where it applies."""
    chunk = score_chunk(labeller, next(iter(source.chunks())), options, main, progress=False)
    if not main:  # this rank took its share of the encoding; rank 0 scores
        return labeller
    return labeller.with_priors({a: em_prior(p[chunk.applies[a]], labeller.split_prior(a))
                                 for a, p in chunk.proba.items() if not labeller.heads[a].spec.multi})


def run_predict(run: str | Path, source: CatalogueSource, out: str | Path, options: EncodeOptions = EncodeOptions(),
                attributes=None, target_precision: float | None = None, photos: TaskPhotos | str = "",
                progress: bool = True, guarantee: float | None = None,
                adapt_prior: bool = False) -> ScoringTotals | None:
    """Label every product of ``source`` with the run's labeller; rank 0 writes (others return None).
    Every output appears in ``out`` together, when the run succeeds. ``photos`` says how the
    Label Studio tasks name photos (a string: a prefix before their paths). ``adapt_prior``:
    probabilities assume the catalogue's own class frequencies, estimated on its first chunk
    (:func:`adapted_to_catalogue`)."""
    started = time.perf_counter()
    world, device = init_distributed(resolve_device(options.device))
    labeller = load_labeller(run, device, options.cache_dir, attributes, target_precision, guarantee)
    with rank_output_folder(world.main, out, OUTPUTS, previous=PREVIOUS) as stage:
        source.title_column = title_column_for(source, labeller)
        summary = validate_catalogue(source.chunks(), options.skip_bad)  # missing photos stop the run here
        specs = [head.spec for head in labeller.heads.values()]
        warn_missing_columns(specs, source.header(), source.data)
        check_dependencies(specs, source.header(), source.data)
        if summary.rows == 0:
            raise CatalogueError(f"{source.data}: catalogue has no rows")
        info = {"command": "predict", "labeller": str(run), "data": str(source.data),
                "title_column": source.title_column}
        if adapt_prior:
            with encoding_precision(resolve_precision(options.precision, device)):
                labeller = adapted_to_catalogue(labeller, source, options, world.main)
            info["priors"] = {a: dict(zip(map(str, labeller.heads[a].classes), np.round(p, 4).tolist()))
                              for a, p in labeller.priors.items()}
        return label_catalogue(labeller, source, summary.rows, options, resolve_precision(options.precision, device),
                               world.main, stage, info, photos, started, progress)
