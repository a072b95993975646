"""Prompt files: one YAML per attribute, pure data (no hyperparameters).

A prompt file looks like::

    attribute: color          # the name used in outputs
    column: baseColour        # the catalogue column holding the labels
    templates:                # each must contain {} where the class text goes
      - "a photo of a {} product"
      - "{}"
    classes:                  # class value -> the texts that stand for it in prompts
      Black:                  # empty: the class value itself
      Navy Blue: [navy blue, dark blue]

Synonyms only build prompts: predictions and metrics always use the class value.

Two optional keys describe real catalogues:

    applies_to:               # the products the attribute applies to, by another attribute's
      category: [Tshirts, Tops]   # value (given in the catalogue, else predicted) or a column's;
                              # elsewhere the attribute is n/a: no label, no metric, no review
    other: Other              # the catalogue holds values outside the classes: they are this
                              # class (listed in classes with negative prompts, or added), which
                              # is learnt like any class and never auto-accepted
    taxonomy: fashion         # a category tree (clipft.taxonomy; a shipped name or a file): every
                              # leaf is a class (``classes`` then only adds synonyms), and each
                              # prediction is a path, reported at every level of the tree
    multi: true               # several values per product ("Black|White"; clipft.multilabel),
    separator: "|"            # joined by this separator (the default)
"""
from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .fileio import read_yaml
from .shipped import not_found, resolve
from .taxonomy import Taxonomy, TaxonomyError, load_taxonomy, parse_taxonomy
from .vectors import blank_cells

log = logging.getLogger(__name__)
_KEYS = ("attribute", "column", "templates", "classes")
_OPTIONAL_KEYS = ("applies_to", "other", "taxonomy", "multi", "separator")


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class PromptSpec:
    attribute: str
    column: str
    classes: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]]
    templates: tuple[str, ...]
    source: str = field(default="<memory>", compare=False)
    applies_to: dict[str, tuple[str, ...]] = field(default_factory=dict)  # attribute or column -> allowed values
    other: str | None = None  # the class that stands for every catalogue value outside the listed ones
    taxonomy: Taxonomy | None = field(default=None, compare=False)  # the classes are its leaves
    multi: bool = False  # several values per product, joined by ``separator``
    separator: str = "|"

    def catalogue_labels(self, values) -> np.ndarray:
        """Catalogue values as this attribute's labels: with ``other``, a non-blank value that is
        not a class becomes ``other``; blanks and (without ``other``) unknown values stay as they are."""
        values = np.asarray(list(values), dtype=object)
        if self.other is None or not len(values):
            return values
        if self.multi:
            from .multilabel import other_values

            return other_values(values, self.classes, self.other, self.separator)
        outside = ~blank_cells(values) & ~pd.Series(values, dtype=object).isin(self.classes).to_numpy()
        return np.where(outside, self.other, values)

    def prompts_for(self, value: str) -> list[str]:
        """Every prompt for one class: templates x synonyms."""
        return [t.format(text) for t in self.templates for text in self.synonyms[value]]

    def bare(self) -> "PromptSpec":
        """The same classes with the class value as their only prompt (bare-label captions)."""
        return replace(self, templates=("{}",), synonyms={c: (c,) for c in self.classes})


def parse_prompt_spec(data: object, source: str = "<memory>", files: bool = True) -> PromptSpec:
    """Validate the parsed YAML of a prompt file and build a :class:`PromptSpec`. ``files``
    False: a taxonomy must be given inline, never by a name or path to read (a run folder's copy)."""

    def fail(key: str, problem: str) -> PromptFileError:
        return PromptFileError(f"{source}: key '{key}': {problem}")

    if not isinstance(data, dict):
        raise PromptFileError(f"{source}: expected a mapping with keys {', '.join(_KEYS)}")
    unknown = sorted(set(data) - set(_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key (allowed: {', '.join(_KEYS + _OPTIONAL_KEYS)})")
    for key in _KEYS:
        if key not in data and not (key == "classes" and "taxonomy" in data):
            raise fail(key, "missing")
    for key in ("attribute", "column"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise fail(key, "must be a non-empty string")

    templates = data["templates"]
    if not isinstance(templates, list) or not templates:
        raise fail("templates", "must be a non-empty list of strings")
    for i, template in enumerate(templates):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise fail(f"templates[{i}]", f"{template!r} must contain exactly one '{{}}'")
        try:
            template.format("x")
        except (IndexError, KeyError, ValueError) as err:
            raise fail(f"templates[{i}]", f"{template!r} is not a valid template ({err})") from None

    taxonomy = _parse_taxonomy(data.get("taxonomy"), source, files, fail)
    synonyms = _parse_classes(data["classes"], fail) if "classes" in data else {}
    if taxonomy is not None:
        synonyms = _tree_classes(synonyms, taxonomy, fail)
    other = _parse_other(data.get("other"), fail)
    if other is not None and other not in synonyms:
        synonyms[other] = (other,)
    return PromptSpec(
        attribute=data["attribute"],
        column=data["column"],
        classes=tuple(synonyms),
        synonyms=synonyms,
        templates=tuple(templates),
        source=source,
        applies_to=_parse_applies_to(data.get("applies_to"), data["attribute"], fail),
        other=other,
        taxonomy=taxonomy,
        **_parse_multi(data, fail),
    )


def _parse_multi(data: dict, fail) -> dict:
    multi, separator = data.get("multi", False), data.get("separator", "|")
    if not isinstance(multi, bool):
        raise fail("multi", "must be true or false")
    if not isinstance(separator, str) or not separator.strip() or separator != separator.strip():
        raise fail("separator", "must be a non-empty string without spaces around it, e.g. '|'")
    if "separator" in data and not multi:
        raise fail("separator", "only an attribute with 'multi: true' has several values to separate")
    return {"multi": multi, "separator": separator}


def _parse_taxonomy(value, source: str, files: bool, fail) -> Taxonomy | None:
    if value is None:
        return None
    try:
        if isinstance(value, dict):
            return parse_taxonomy(value, f"{source}: taxonomy")
        if isinstance(value, str) and files:
            return load_taxonomy(value)
    except TaxonomyError as err:
        raise fail("taxonomy", str(err)) from None
    raise fail("taxonomy", "must name a taxonomy file (or a shipped one, e.g. fashion)" if files else
               "must be the tree itself (levels and tree)")


def _tree_classes(synonyms: dict, taxonomy: Taxonomy, fail) -> dict[str, tuple[str, ...]]:
    """Every leaf of the tree, in its order: with the synonyms ``classes`` gives, else its name."""
    strays = [c for c in synonyms if c not in taxonomy.paths]
    if strays:
        raise fail("classes", f"{strays[0]!r} is not a leaf of the taxonomy {taxonomy.source}")
    return {leaf: synonyms.get(leaf, (leaf,)) for leaf in taxonomy.leaves}


def _parse_applies_to(value, attribute: str, fail) -> dict[str, tuple[str, ...]]:
    """attribute (or column) -> the values of it for which this attribute applies."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise fail("applies_to", "must be a mapping of attribute (or column) -> list of values, "
                                 "e.g. {category: [Tshirts, Tops]}")
    out = {}
    for name, values in value.items():
        if not isinstance(name, str) or not name.strip() or name == attribute:
            raise fail("applies_to", f"{name!r} must name another attribute or a column")
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise fail(f"applies_to.{name}", "must be a non-empty list of values (quote values such as Yes/No)")
        out[name] = tuple(values)
    return out


def _parse_other(value, fail) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise fail("other", "must be the name of the 'none of these' class, e.g. Other")
    return value


def _parse_classes(classes, fail) -> dict[str, tuple[str, ...]]:
    """class value -> the texts that stand for it (the value itself when none are given)."""
    if isinstance(classes, list):
        classes = {value: None for value in classes}
    if not isinstance(classes, dict) or not classes:
        raise fail("classes", "must be a non-empty mapping of class value -> synonyms (or a list of values)")
    synonyms: dict[str, tuple[str, ...]] = {}
    for value, texts in classes.items():
        if not isinstance(value, str) or not value.strip():
            raise fail("classes", f"class value {value!r} must be a non-empty string (quote values such as Yes/No)")
        if texts is None:
            texts = [value]
        elif isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise fail(f"classes.{value}", "synonyms must be a non-empty list of strings (or empty for the value itself)")
        synonyms[value] = tuple(texts)
    return synonyms


def load_prompt_spec(ref: str | os.PathLike) -> PromptSpec:
    """A prompt file by path, or a shipped one by name (``color``)."""
    path = resolve(ref, "prompts")
    if path is None:
        raise PromptFileError(not_found(ref, "prompts"))
    return parse_prompt_spec(read_yaml(path, PromptFileError), source=str(path))


def load_prompt_specs(paths) -> list[PromptSpec]:
    """Load several prompt files; attribute names must be unique because outputs are keyed by them."""
    specs = [load_prompt_spec(p) for p in paths]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.attribute in seen:
            raise PromptFileError(
                f"{spec.source}: key 'attribute': '{spec.attribute}' is also defined in {seen[spec.attribute]}"
            )
        seen[spec.attribute] = spec.source
    return specs


def warn_missing_columns(specs, columns, data) -> list[PromptSpec]:
    """Say which prompt files name a column the catalogue lacks: their attribute is still
    predicted, but has no labels to learn from or be measured against. Returns those specs."""
    missing = [spec for spec in specs if spec.column not in columns]
    for spec in missing:
        log.warning("%s: no column '%s' (named by %s): %s is predicted, but has no labels here to learn "
                    "from or to be measured against", data, spec.column, spec.source, spec.attribute)
    return missing


# tokenizer -> the prompt sets it has checked: a run warns once per prompt file, not per chunk or epoch
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_prompt_lengths(spec: PromptSpec, tokenizer) -> None:
    """Prompts longer than the text tower's context are cut by its tokenizer: refuse prompts
    that lose their class text or leave two classes the same prompts (their probabilities
    would be equal whatever the photo); warn, once per tokenizer and prompt file, of other cuts.
    A tokenizer without a ``context_length`` never cuts."""
    context = getattr(tokenizer, "context_length", None)
    if not context:
        return
    key = (spec.source, spec.attribute, spec.templates, tuple(spec.synonyms[c] for c in spec.classes), spec.classes)
    checked = _CHECKED.setdefault(tokenizer, set())
    if key in checked:
        return
    parts = [(value, template, text) for value in spec.classes for template in spec.templates
             for text in spec.synonyms[value]]
    texts = [template.format(text) for _, template, text in parts]
    cut = [max(0, n - context) for n in token_lengths(tokenizer, texts)]
    if any(cut):
        tokens = [tuple(row) for row in tokenizer(texts).tolist()]  # as the text tower sees them
        _refuse_lost_class_text(spec, tokenizer, parts, tokens, cut, context)
        _refuse_identical_classes(spec, parts, tokens, context)
        _warn_cut(spec, parts, cut, context)
    checked.add(key)


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """How many tokens each text has before any cut (start and end tokens included)."""
    # no text has more tokens than UTF-8 bytes (byte-level BPE: an emoji or a CJK character is
    # several tokens), plus the start and end tokens (and room to spare)
    rows = tokenizer(texts, context_length=max(len(t.encode("utf-8")) for t in texts) + 8).tolist()
    pad = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None) or 0
    return [max((i + 1 for i, token in enumerate(row) if token != pad), default=0) for row in rows]


def _refuse_lost_class_text(spec: PromptSpec, tokenizer, parts, tokens, cut, context: int) -> None:
    """A prompt cut back to its template with no class text left (the same for every class)."""
    templates = list(spec.templates)
    without = dict(zip(templates, (tuple(row) for row in tokenizer([t.format("") for t in templates]).tolist())))
    for (value, template, text), row, n in zip(parts, tokens, cut):
        if n and row == without[template]:
            raise PromptFileError(f"{spec.source}: template {template!r} leaves no room for the class text "
                                  f"within the text tower's {context} tokens ({value!r}: {n} tokens cut); shorten it")


def _refuse_identical_classes(spec: PromptSpec, parts, tokens, context: int) -> None:
    """Two classes whose prompts, once cut, are the same tokens: nothing can tell them apart."""
    rows: dict[str, list] = {value: [] for value in spec.classes}
    for (value, _, _), row in zip(parts, tokens):
        rows[value].append(row)
    seen: dict[tuple, str] = {}
    for value in spec.classes:
        prompts = tuple(sorted(rows[value]))
        if prompts in seen:
            raise PromptFileError(f"{spec.source}: classes {seen[prompts]!r} and {value!r} of {spec.attribute} get "
                                  f"identical prompts once cut to the text tower's {context} tokens; shorten the "
                                  f"templates or synonyms")
        seen[prompts] = value


def _warn_cut(spec: PromptSpec, parts, cut, context: int) -> None:
    """One warning naming each class whose prompts were cut, and by how many tokens at most."""
    worst: dict[str, int] = {}
    for (value, _, _), n in zip(parts, cut):
        if n:
            worst[value] = max(worst.get(value, 0), n)
    listed = ", ".join(f"{value!r} (up to {n} tokens cut)" for value, n in worst.items())
    log.warning("%s: %d prompt(s) of %s are longer than the text tower's %d tokens and were cut: %s; "
                "shorten the templates or synonyms", spec.source, sum(1 for n in cut if n), spec.attribute,
                context, listed)
