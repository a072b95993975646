"""A category tree (taxonomy) for a prompt file's classes: its leaves are the classes, and each
leaf lies on one path of ancestors (the fashion catalogue: masterCategory -> subCategory ->
articleType). Predictions are paths, never leaves alone: the chosen leaf is the path with the
highest probability (in a tree a leaf fixes its path, so that is the leaf posterior's argmax),
and each ancestor is reported with its own probability, the posterior summed over the leaves
under it. A predicted leaf therefore always lies under its predicted ancestors.

A taxonomy file::

    levels:                   # the ancestors, root first: a name for outputs, the catalogue column
      - {name: master_category, column: masterCategory}
      - {name: sub_category, column: subCategory}
    tree:                     # nested mappings, the last level a list of leaves
      Apparel:
        Topwear: [Tshirts, Shirts, Tops]
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .fileio import read_yaml
from .shipped import not_found, resolve


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Taxonomy:
    source: str
    levels: tuple[tuple[str, str], ...]  # (output name, catalogue column) per ancestor level, root first
    paths: dict[str, tuple[str, ...]]  # leaf -> its ancestors, root first

    @property
    def leaves(self) -> tuple[str, ...]:
        return tuple(self.paths)

    def ancestors(self, leaves, classes, proba: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per level, (the ancestor of each chosen leaf, its probability: the posterior of the
        leaves under it). ``proba`` has one column per class of ``classes``; ``leaves`` are the
        chosen leaves, one per row."""
        out = []
        unknown = ("",) * len(self.levels)  # a class outside the tree ('other'): no known ancestors
        for depth in range(len(self.levels)):
            owner = np.array([self.paths.get(c, unknown)[depth] for c in classes], dtype=object)
            values = np.array([self.paths.get(leaf, unknown)[depth] for leaf in leaves], dtype=object)
            under = owner[None, :] == values[:, None]  # (rows, classes): the leaves under each row's ancestor
            out.append((values, (proba * under).sum(axis=1)))
        return out


def _levels(data, source: str) -> tuple[tuple[str, str], ...]:
    levels = data.get("levels")
    if not isinstance(levels, list) or not levels:
        raise TaxonomyError(f"{source}: key 'levels': must be a list of {{name, column}}, root first")
    out = []
    for i, level in enumerate(levels):
        if not isinstance(level, dict) or not all(isinstance(level.get(k), str) and level[k] for k in ("name", "column")):
            raise TaxonomyError(f"{source}: key 'levels[{i}]': must be a mapping with a name and a column")
        out.append((level["name"], level["column"]))
    return tuple(out)


def _paths(node, depth: int, path: tuple, source: str, out: dict) -> None:
    """Walk the tree: mappings down to the last ancestor level, then a list of leaves."""
    where = " > ".join(path) or "tree"
    if depth == 0:
        if not isinstance(node, list) or not all(isinstance(leaf, str) and leaf.strip() for leaf in node):
            raise TaxonomyError(f"{source}: key '{where}': the last level must be a list of leaf names")
        for leaf in node:
            if leaf in out:
                raise TaxonomyError(f"{source}: leaf '{leaf}' is under both {' > '.join(out[leaf])} and {where}")
            out[leaf] = path
        return
    if not isinstance(node, dict) or not node:
        raise TaxonomyError(f"{source}: key '{where}': must be a mapping of the next level's values")
    for value, child in node.items():
        _paths(child, depth - 1, path + (str(value),), source, out)


def parse_taxonomy(data, source: str = "<memory>") -> Taxonomy:
    if not isinstance(data, dict):
        raise TaxonomyError(f"{source}: expected a mapping with keys levels, tree")
    levels = _levels(data, source)
    paths: dict[str, tuple[str, ...]] = {}
    _paths(data.get("tree"), len(levels), (), source, paths)
    return Taxonomy(source, levels, paths)


def taxonomy_to_dict(taxonomy: Taxonomy) -> dict:
    """The taxonomy in the form :func:`parse_taxonomy` reads (a run folder keeps it inline)."""
    tree: dict = {}
    for leaf, path in taxonomy.paths.items():
        node = tree
        for depth, value in enumerate(path):
            node = node.setdefault(value, [] if depth == len(path) - 1 else {})
        node.append(leaf)
    return {"levels": [{"name": n, "column": c} for n, c in taxonomy.levels], "tree": tree}


def load_taxonomy(ref: str | os.PathLike) -> Taxonomy:
    """A taxonomy file by path, or a shipped one by name (``fashion``)."""
    path = resolve(ref, "taxonomies")
    if path is None:
        raise TaxonomyError(not_found(ref, "taxonomies"))
    return parse_taxonomy(read_yaml(path, TaxonomyError), str(path))
