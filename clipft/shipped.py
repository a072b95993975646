"""Prompt files and configs that ship inside the package, so that they exist after
``pip install clipft``: a command accepts one by name (``--prompts color``, ``--config photos``)
wherever it accepts a path; a path that exists wins. The configs are recipes without data: they
name no file outside the package (the catalogue is the user's, ``--set data=...``); the fashion
benchmarks' copies with their paths are in ``benchmarks/configs/``."""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

KINDS = ("prompts", "configs")


def shipped_dir(kind: str) -> Path:
    return Path(str(files("clipft") / "resources" / kind))


def shipped_names(kind: str) -> list[str]:
    return sorted(p.stem for p in shipped_dir(kind).glob("*.yaml"))


def resolve(ref: str | os.PathLike, kind: str) -> Path | None:
    """The file ``ref`` names: a path as written when it exists, else the shipped file of that
    name (``color`` or ``color.yaml``); None when it is neither."""
    path = Path(ref)
    if path.is_file():
        return path
    shipped = shipped_dir(kind) / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    return None


def not_found(ref: str | os.PathLike, kind: str) -> str:
    return f"{ref}: no such file, and not a shipped {kind} name ({', '.join(shipped_names(kind))})"
