"""Training objectives: which examples a run trains on and the caption of each.

An attribute task pairs photos with a caption made from their class: the bare value
(``label``, "Navy Blue") or the value put into one of the prompt file's templates
(``template``, drawn at random per class and step). A title task pairs photos with their
product titles (``title``), which is how an unaligned model learns to be a CLIP at all.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from ..metrics import check_labels
from ..prompts import PromptSpec

log = logging.getLogger(__name__)


@dataclass
class Task:
    name: str
    rows: np.ndarray  # catalogue rows of the training examples
    labels: np.ndarray  # what batches are balanced on (a class value; one value for title tasks)
    texts: np.ndarray  # bare labels or titles, per example
    spec: PromptSpec | None = None
    templated: bool = False
    swap_vocabulary: list[list[tuple[str, ...]]] = field(default_factory=list)  # per attribute: texts per class
    full_labels: np.ndarray | None = None  # multi-valued attributes: each example's whole label ("Black|White")

    def also_positive(self, positions, caption_values: list[str]) -> np.ndarray | None:
        """(examples, captions) True where a caption is another value of the example's product
        (multi-valued attributes): the loss counts it as neither target nor negative."""
        if self.full_labels is None:
            return None
        from ..multilabel import split_values

        mask = np.zeros((len(positions), len(caption_values)), dtype=bool)
        for i, position in enumerate(positions):
            values = set(split_values(self.full_labels[position], self.spec.separator)) - {self.texts[position]}
            mask[i] = [value in values for value in caption_values]
        return mask

    def hard_negatives(self, positions, rng: np.random.Generator) -> list[str]:
        """NegCLIP-style counterfactual captions, one per caption where possible: an attribute
        word of the caption swapped for another class's ("Puma Men Black Shoes" -> "Puma Women
        Black Shoes"). They only ever act as negatives, so the image side must see the difference."""
        out = []
        for text in self.texts[positions]:
            negative = swap_attribute_word(str(text), self.swap_vocabulary, rng)
            if negative is not None:
                out.append(negative)
        return out

    def captions(self, positions, rng: np.random.Generator) -> list[str]:
        if not self.templated:
            return [str(t) for t in self.texts[positions]]
        chosen: dict[str, str] = {}  # one caption per class within a batch, so classes stay distinct
        for value in self.texts[positions]:
            if value not in chosen:
                prompts = self.spec.prompts_for(value)
                chosen[value] = prompts[rng.integers(len(prompts))]
        return [chosen[v] for v in self.texts[positions]]


def class_log_prior(labels: np.ndarray, classes) -> np.ndarray:
    """Log frequency of each of ``classes`` among the training ``labels`` (add-one smoothed, so a
    class without examples is rare, not impossible)."""
    counts = np.array([np.sum(labels == c) for c in classes], dtype=float)
    return np.log((counts + 1) / (counts.sum() + len(classes)))


def training_priors(tasks: list["Task"]) -> dict[str, np.ndarray]:
    """Per attribute task, :func:`class_log_prior` of its examples."""
    return {t.name: class_log_prior(t.labels, t.spec.classes) for t in tasks if t.spec is not None}


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
    if spec.multi:
        return _multi_task(spec, labels, rows, templated, shots, seed)
    known = check_labels(labels, spec.classes).known
    rows, labels = rows[known], labels[known].astype(str)
    keep = sample_shots(labels, shots, seed)
    return Task(spec.attribute, rows[keep], labels[keep], labels[keep], spec, templated)


def _multi_task(spec: PromptSpec, labels: np.ndarray, rows: np.ndarray, templated: bool, shots: int | None,
                seed: int) -> Task:
    """A multi-valued attribute: one example per (product, value), balanced and sampled on the
    value; each keeps its product's whole label so that its other values are no negatives."""
    from ..multilabel import check_multi_labels, expand

    canonical, check = check_multi_labels(labels, spec.classes, spec.separator)
    rows, values, full = expand(rows[check.known], canonical[check.known], spec.separator)
    keep = sample_shots(values.astype(str), shots, seed)
    return Task(spec.attribute, rows[keep], values[keep].astype(str), values[keep].astype(str), spec, templated,
                full_labels=full[keep])


def title_task(titles: list[str | None], rows: np.ndarray, vocabulary: list[list[tuple[str, ...]]] = ()) -> Task:
    """Photos paired with their titles; ``vocabulary`` (from :func:`swap_vocabulary`) enables hard negatives."""
    with_title = np.array([titles[r] is not None for r in rows], dtype=bool)
    rows = rows[with_title]
    texts = np.array([titles[r] for r in rows], dtype=object)
    return Task("title", rows, np.zeros(len(rows), dtype=int), texts, swap_vocabulary=list(vocabulary))


def swap_attribute_word(text: str, vocabulary: list[list[tuple[str, ...]]], rng: np.random.Generator) -> str | None:
    """``text`` with one class word (of one attribute, chosen at random) replaced by a word of
    another class of that attribute; None when it names no class."""
    found = []
    for classes in vocabulary:
        for index, words in enumerate(classes):
            for word in words:
                match = re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE)
                if match:
                    found.append((classes, index, match))
    if not found:
        return None
    classes, index, match = found[rng.integers(len(found))]
    others = [c for i, c in enumerate(classes) if i != index]
    replacement = others[rng.integers(len(others))]
    word = replacement[rng.integers(len(replacement))]
    if match.group()[0].isupper():
        word = word[0].upper() + word[1:]  # titles capitalise their words; so does the negative
    return text[: match.start()] + word + text[match.end():]


def swap_vocabulary(specs: list[PromptSpec]) -> list[list[tuple[str, ...]]]:
    """Per attribute, the words that name each class: its value and its synonyms."""
    return [[tuple(dict.fromkeys((value, *spec.synonyms[value]))) for value in spec.classes] for spec in specs]


class UntrainableError(ValueError):
    """Training data from which nothing can be learnt or measured; the message says what to add."""


MIN_VAL_ROWS = 20


def check_trainable(tasks: list[Task], val_rows: int, source) -> None:
    """Refuse a run that would train to a loss of 0 and learn nothing: a task whose examples all
    share one caption (one class). Refuse one with no validation rows (no loss to choose the
    best epoch on), and warn when there are too few for that choice to mean much."""
    for task in tasks:
        captions = set(task.texts)
        if len(captions) < 2:
            raise UntrainableError(f"{source}: {task.name}: every training example has the caption "
                                   f"{str(next(iter(captions)))!r}; training needs at least two classes")
    if val_rows == 0:
        raise UntrainableError(f"{source}: the validation split is empty, so no epoch can be chosen; "
                               f"add products or raise val_fraction")
    if val_rows < MIN_VAL_ROWS:
        log.warning("%s: only %d validation product(s): the best epoch is chosen on very few examples",
                    source, val_rows)
