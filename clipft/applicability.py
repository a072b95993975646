"""Which products an attribute applies to: a prompt file's ``applies_to`` names another
attribute (or a catalogue column) and the values of it for which the attribute makes sense
(sleeve length for tops, a lid for pots and pans). A product's value of that attribute is the
catalogue's when given, else the one predicted for it in the same pass; a product whose
dependency does not apply itself does not get the attribute either. Where an attribute does
not apply it is ``n/a``: no label, no metric, no review, no training example."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .prompts import PromptFileError, PromptSpec
from .vectors import blank_cells


def by_name(specs: list[PromptSpec]) -> dict[str, PromptSpec]:
    """The attributes an ``applies_to`` key can name: by attribute, or by the column that holds
    its labels (``articleType`` names the category attribute that labels that column)."""
    named = {spec.column: spec for spec in specs}
    return named | {spec.attribute: spec for spec in specs}


def dependency_order(specs: list[PromptSpec]) -> list[PromptSpec]:
    """``specs`` with every attribute after those its ``applies_to`` names; a cycle is an error
    naming the prompt file that closes it."""
    named = by_name(specs)
    order, state = [], {}

    def visit(spec: PromptSpec, path: list[str]) -> None:
        if state.get(spec.attribute) == "done":
            return
        if state.get(spec.attribute) == "visiting":
            raise PromptFileError(f"{spec.source}: key 'applies_to': the attributes depend on each other in a "
                                  f"cycle ({' -> '.join(path)}); one of them must apply to every product")
        state[spec.attribute] = "visiting"
        for name in spec.applies_to:
            if name in named:
                visit(named[name], path + [named[name].attribute])
        state[spec.attribute] = "done"
        order.append(spec)

    for spec in specs:
        visit(spec, [spec.attribute])
    return order


def check_dependencies(specs: list[PromptSpec], columns, data) -> None:
    """Every name in an ``applies_to`` is an attribute labelled alongside or a column of ``data``."""
    dependency_order(specs)
    named = by_name(specs)
    for spec in specs:
        for name in spec.applies_to:
            if name not in named and name not in columns:
                raise PromptFileError(f"{spec.source}: key 'applies_to': '{name}' is neither an attribute labelled "
                                      f"here ({', '.join(s.attribute for s in specs)}) nor a column of {data}")


def dependency_values(name: str, named: dict[str, PromptSpec], frame: pd.DataFrame | None, rows: np.ndarray,
                      predicted: dict[str, np.ndarray]) -> np.ndarray:
    """Per product of ``rows``, the value of attribute (or column) ``name``: the catalogue's when
    given, else the predicted one, else None (not known)."""
    spec = named.get(name)
    column = spec.column if spec is not None else name
    values = np.full(len(rows), None, dtype=object)
    if frame is not None and column in frame.columns:
        values = frame[column].to_numpy(dtype=object)[rows].copy()
    missing = blank_cells(values)
    if spec is not None and spec.attribute in predicted:
        values[missing] = np.asarray(predicted[spec.attribute], dtype=object)[missing]
        missing = blank_cells(values)
    values[missing] = None
    return values


def applies(specs: list[PromptSpec], frame: pd.DataFrame | None, rows, predicted: dict[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
    """Attribute -> per product of ``rows``, whether the attribute applies. A dependency whose
    value is not known (no column, a blank cell, nothing predicted) does not rule a product out."""
    rows = np.asarray(rows, dtype=int)
    named = by_name(specs)
    out = {}
    for spec in dependency_order(specs):
        mask = np.ones(len(rows), dtype=bool)
        for name, allowed in spec.applies_to.items():
            values = dependency_values(name, named, frame, rows, predicted)
            mask &= (values == None) | np.isin(values.astype(str), list(allowed))  # noqa: E711 (elementwise)
            if name in named:
                mask &= out[named[name].attribute]
        out[spec.attribute] = mask
    return out


def training_labels(spec: PromptSpec, specs: list[PromptSpec], frame: pd.DataFrame) -> np.ndarray:
    """The attribute's label per catalogue row as training and evaluation read it: a value outside
    the classes is the attribute's ``other`` class when it has one, and a product the catalogue's
    own values rule out (``applies_to``) has no label (None), whatever its cell says."""
    if spec.column not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    labels = spec.catalogue_labels(frame[spec.column].to_numpy(dtype=object))
    applying = applies(specs, frame, np.arange(len(frame)), {})[spec.attribute]
    return np.where(applying, labels, None)
