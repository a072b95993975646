"""Training objectives: which examples a run trains on and the caption of each.

An attribute task pairs photos with a caption made from their class: the bare value
(``label``, "Navy Blue") or the value put into one of the prompt file's templates
(``template``, drawn at random per class and step). A title task pairs photos with their
product titles (``title``), which is how an unaligned model learns to be a CLIP at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import check_labels
from .prompts import PromptSpec


@dataclass
class Task:
    name: str
    rows: np.ndarray  # catalogue rows of the training examples
    labels: np.ndarray  # what batches are balanced on (a class value; one value for title tasks)
    texts: np.ndarray  # bare labels or titles, per example
    spec: PromptSpec | None = None
    templated: bool = False

    def captions(self, positions, rng: np.random.Generator) -> list[str]:
        if not self.templated:
            return [str(t) for t in self.texts[positions]]
        chosen: dict[str, str] = {}  # one caption per class within a batch, so classes stay distinct
        for value in self.texts[positions]:
            if value not in chosen:
                prompts = self.spec.prompts_for(value)
                chosen[value] = prompts[rng.integers(len(prompts))]
        return [chosen[v] for v in self.texts[positions]]


def sample_shots(labels: np.ndarray, shots: int | None, seed: int) -> np.ndarray:
    """Positions of at most ``shots`` examples per class (all of them when ``shots`` is None)."""
    if shots is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def attribute_task(spec: PromptSpec, frame_labels, rows: np.ndarray, templated: bool, shots: int | None,
                   seed: int) -> Task:
    """Training examples of one attribute among ``rows``: those whose label is a class."""
    labels = np.asarray(frame_labels, dtype=object)[rows]
    known = check_labels(labels, spec.classes).known
    rows, labels = rows[known], labels[known].astype(str)
    keep = sample_shots(labels, shots, seed)
    return Task(spec.attribute, rows[keep], labels[keep], labels[keep], spec, templated)


def title_task(titles: list[str | None], rows: np.ndarray) -> Task:
    with_title = np.array([titles[r] is not None for r in rows], dtype=bool)
    rows = rows[with_title]
    texts = np.array([titles[r] for r in rows], dtype=object)
    return Task("title", rows, np.zeros(len(rows), dtype=int), texts)
