"""``clipft import-labels``: the labels people gave in Label Studio, applied to the catalogue.

A Label Studio JSON export is a list of tasks; each keeps the ``data`` it was imported with
(clipft's review tasks carry the product ``id``) and its ``annotations``, whose ``choices``
results are named after catalogue columns (``from_name``). The latest annotation of a task wins;
cancelled ones are ignored.

An export is checked whole before anything is written: a task, annotation or result that does
not say plainly which class a product gets stops the import with one line naming the export and
the task (its position, and its Label Studio id), never a half-applied or garbled catalogue."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from xml.etree import ElementTree

import pandas as pd

from ..catalogue import IMAGE_COLUMNS, TITLE_COLUMNS, CatalogueError, read_catalogue_frame
from ..fileio import atomic_write, prepare_output_dir


class ExportError(CatalogueError):
    """A Label Studio export or labelling config that does not say which label a product gets;
    the message names the file and the task."""


class Invalid(Exception):
    """What is wrong with one task, worded to follow its name (``task 3 (id 42)``)."""


class Label(NamedTuple):
    task: str  # "task 3 (id 42)": where the label came from, for messages
    product: str
    column: str
    value: str


@dataclass
class Questions:
    """What a person may answer: catalogue columns and, when the labelling config is known, the
    classes each one offers (None: any class)."""

    classes: dict[str, frozenset[str] | None]
    source: str  # where the questions come from, for messages
    protected: frozenset[str] = frozenset()  # the catalogue's photo and title columns: never answered

    def check(self, column: str, value: str) -> None:
        if column in self.protected:
            raise Invalid(f"answers '{column}', the catalogue's photo or title column; import-labels changes "
                          f"only attributes (remove that result from the export)")
        if column not in self.classes:
            raise Invalid(f"answers '{column}', which is not {self.source}")
        allowed = self.classes[column]
        if allowed is not None and value not in allowed:
            raise Invalid(f"'{value}' is not a class of {column} ({', '.join(sorted(allowed))})")


def labelling_config(path: str | Path) -> dict[str, frozenset[str]]:
    """Per question (a catalogue column), its classes, from the labelling interface predict wrote
    (labelstudio_config.xml)."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as err:
        raise ExportError(f"{path}: not a readable Label Studio labelling config ({err})") from None
    questions = {q.get("name"): choice_values(path, q) for q in root.iter("Choices")}
    if not questions:
        raise ExportError(f"{path}: no <Choices> question; give the labelstudio_config.xml clipft predict wrote")
    return questions


def choice_values(path, question) -> frozenset[str]:
    """The classes of one <Choices> question; a <Choice> without a value offers no class a person
    could pick, so the config is refused rather than read with a hole in it."""
    values = [c.get("value") for c in question.iter("Choice")]
    if any(not v for v in values):
        raise ExportError(f"{path}: question '{question.get('name')}' has a <Choice> without a value; "
                          f"give every <Choice> a value (its class)")
    return frozenset(values)


def catalogue_questions(frame: pd.DataFrame, data, id_column: str, config=None) -> Questions:
    """Every column but the id, photo and title columns may be answered; with ``config``, only its
    questions, with its classes. An export from someone else must not re-point photos (to any path
    or URL) or rewrite titles, so those columns are refused even when a config asks them."""
    protected = frozenset(c for c in frame.columns if c in IMAGE_COLUMNS + TITLE_COLUMNS)
    columns = [c for c in frame.columns if c != id_column and c not in protected]
    if config is None:
        return Questions(dict.fromkeys(columns), f"a column of {data}", protected)
    asked = labelling_config(config)
    return Questions({c: asked[c] for c in columns if c in asked}, f"both a question of {config} and a column of {data}",
                     protected)


def read_export(export: str | Path) -> list:
    try:
        tasks = json.loads(Path(export).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSON and UTF-8 errors are ValueErrors
        raise ExportError(f"{export}: not a readable Label Studio JSON export ({err})") from None
    if not isinstance(tasks, list):
        raise ExportError(f"{export}: expected a list of tasks (Label Studio's JSON export)")
    return tasks


def task_name(position: int, task) -> str:
    """``task 3 (id 42)``: its position in the export, and the id Label Studio shows."""
    ls_id = task.get("id") if isinstance(task, dict) else None
    return f"task {position}" + (f" (id {ls_id})" if isinstance(ls_id, (str, int)) else "")


def label_studio_labels(export: str | Path, questions: Questions) -> list[Label]:
    """One label per (product, column) answered in the export's latest annotations; two tasks
    answering one product differently are an error, not a silent last-one-wins."""
    labels: dict[tuple[str, str], Label] = {}
    for position, task in enumerate(read_export(export), start=1):
        name = task_name(position, task)
        try:
            product, answers = task_answers(task, questions)
        except Invalid as err:
            raise ExportError(f"{export}: {name}{err}") from None
        for column, value in answers.items():
            earlier = labels.setdefault((product, column), Label(name, product, column, value))
            if earlier.value != value:
                raise ExportError(f"{export}: {name} gives product {product} {column} '{value}', "
                                  f"where {earlier.task} gave '{earlier.value}'; keep one answer")
    return list(labels.values())


def task_answers(task, questions: Questions) -> tuple[str, dict[str, str]]:
    """The product of a task and the answers of its latest annotation (column -> class)."""
    if not isinstance(task, dict):
        raise Invalid(" is not an object (a Label Studio task)")
    data = task.get("data")
    product = data.get("id") if isinstance(data, dict) else None
    if isinstance(product, bool) or not isinstance(product, (str, int)) or product == "":
        raise Invalid(" has no data.id (was it made by clipft predict?)")
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        raise Invalid(" has annotations that are not a list")
    answered = []
    for position, annotation in enumerate(annotations, start=1):
        if not isinstance(annotation, dict):
            raise Invalid(f", annotation {position}: not an object")
        if not annotation.get("was_cancelled"):
            answered.append((str(annotation.get("updated_at") or annotation.get("created_at") or ""),
                             annotation_answers(position, annotation, questions)))
    return str(product), max(answered, key=lambda a: a[0])[1] if answered else {}


def annotation_answers(position: int, annotation: dict, questions: Questions) -> dict[str, str]:
    """column -> class of one annotation; a column answered twice differently is an error."""
    results = annotation.get("result", [])
    if not isinstance(results, list):
        raise Invalid(f", annotation {position}: its result is not a list")
    answers = {}
    for number, result in enumerate(results, start=1):
        where = f", annotation {position}, result {number}"
        try:
            column, value = result_answer(result, questions)
        except Invalid as err:
            raise Invalid(f"{where}: {err}") from None
        if answers.setdefault(column, value) != value:
            raise Invalid(f"{where}: a second answer for {column}, '{value}' after '{answers[column]}'")
    return answers


def result_answer(result, questions: Questions) -> tuple[str, str]:
    """(column, class) of one ``choices`` result, checked against the questions."""
    if not isinstance(result, dict):
        raise Invalid("not an object")
    if result.get("type") != "choices":
        raise Invalid(f"type {result.get('type')!r}; clipft's labelling interface asks only 'choices'")
    column = result.get("from_name")
    if not isinstance(column, str) or not column:
        raise Invalid("no from_name (the attribute it answers)")
    value = result.get("value")
    choices = value.get("choices") if isinstance(value, dict) else None
    if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
        raise Invalid(f"value.choices of {column} is not a list of class names")
    if len(set(choices)) != 1:
        raise Invalid(f"{len(choices)} choices for {column}; one class is one choice")
    questions.check(column, choices[0])
    return column, choices[0]


def apply_label_studio_export(export, data, out, id_column: str = "id", config=None) -> pd.DataFrame:
    """Write the catalogue with the exported labels applied to ``out`` and the list of changes
    beside it (``<out>.changes.csv``); returns the changes. ``config`` (the labelstudio_config.xml
    predict wrote) limits answers to its questions and classes. Nothing is written unless the
    whole export is valid."""
    frame = read_catalogue_frame(Path(data)).reset_index(drop=True)
    if id_column not in frame.columns:
        raise CatalogueError(f"{data}: no id column '{id_column}'")
    labels = label_studio_labels(export, catalogue_questions(frame, data, id_column, config))
    rows = {v: i for i, v in enumerate(frame[id_column])}
    for label in labels:
        if label.product not in rows:
            raise ExportError(f"{export}: {label.task}: product {label.product} is not in {data}")
    prepare_output_dir(Path(out).parent, (Path(out).name, f"{Path(out).name}.changes.csv"))
    changes = apply_labels(frame, [(rows[label.product], label) for label in labels])
    with atomic_write(out) as f:
        frame.to_csv(f, index=False)
    with atomic_write(f"{out}.changes.csv") as f:
        changes.to_csv(f, index=False)
    return changes


def apply_labels(frame: pd.DataFrame, labels: list[tuple[int, Label]]) -> pd.DataFrame:
    """Set each (row, label) in ``frame``; returns the values that changed, before and after."""
    changes = []
    for row, label in labels:
        before = frame.at[row, label.column]
        if before != label.value:
            changes.append({"id": label.product, "column": label.column, "before": before, "after": label.value})
            frame.at[row, label.column] = label.value
    return pd.DataFrame(changes, columns=["id", "column", "before", "after"])
