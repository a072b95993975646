"""``clipft import-labels``: the labels people gave in Label Studio, applied to the catalogue.

Label Studio exports a project in several formats; the three that carry the answers are read,
told apart by their content:
- JSON: a list of tasks, each with the ``data`` it was imported with and its ``annotations``,
  whose ``choices`` results are named after catalogue columns (``from_name``). The latest
  annotation of a task wins; cancelled ones are ignored.
- JSON_MIN and CSV: one flat record per annotation, the task data and one field per question
  (named after its column: a class, or a JSON list when several were picked). Which fields are
  answers only the labelling config says, so these need ``--config``.
Tasks name their product by ``data.clipft_id`` (JSON_MIN and CSV replace ``data.id`` by Label
Studio's own task id); a JSON export of older tasks falls back to ``data.id``.

An export is checked whole before anything is written: a task, annotation or result that does
not say plainly which class a product gets stops the import with one line naming the export and
the task (its position, and its Label Studio id), never a half-applied or garbled catalogue."""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from xml.etree import ElementTree

import pandas as pd

from ..catalogue import IMAGE_COLUMNS, TITLE_COLUMNS, CatalogueError, read_catalogue_frame
from ..fileio import atomic_write, prepare_output_dir
from ..photo_download import is_url
from ..reporting.review import PRODUCT_FIELD


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
    multiple: frozenset[str] = frozenset()  # questions of several choices (multi-valued attributes)
    separator: str = "|"  # how several choices are joined into one catalogue value

    def check(self, column: str, value: str) -> None:
        if column in self.protected:
            raise Invalid(f"answers '{column}', the catalogue's photo or title column; import-labels changes "
                          f"only attributes (remove that result from the export)")
        if column not in self.classes:
            raise Invalid(f"answers '{column}', which is not {self.source}")
        allowed = self.classes[column]
        if allowed is not None and value not in allowed:
            raise Invalid(f"'{value}' is not a class of {column} ({', '.join(sorted(allowed))})")


def labelling_config(path: str | Path) -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Per question (a catalogue column), its classes, from the labelling interface predict wrote
    (labelstudio_config.xml); and the questions that take several choices."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as err:
        raise ExportError(f"{path}: not a readable Label Studio labelling config ({err})") from None
    questions = {q.get("name"): choice_values(path, q) for q in root.iter("Choices")}
    if not questions:
        raise ExportError(f"{path}: no <Choices> question; give the labelstudio_config.xml clipft predict wrote")
    return questions, frozenset(q.get("name") for q in root.iter("Choices") if q.get("choice") == "multiple")


def choice_values(path, question) -> frozenset[str]:
    """The classes of one <Choices> question; a <Choice> without a value offers no class a person
    could pick, so the config is refused rather than read with a hole in it."""
    values = [c.get("value") for c in question.iter("Choice")]
    if any(not v for v in values):
        raise ExportError(f"{path}: question '{question.get('name')}' has a <Choice> without a value; "
                          f"give every <Choice> a value (its class)")
    return frozenset(values)


def catalogue_questions(frame: pd.DataFrame, data, id_column: str, config=None, separator: str = "|") -> Questions:
    """Every column but the id, photo and title columns may be answered; with ``config``, its
    questions, with its classes (a question the catalogue has no column for adds the column). An
    export from someone else must not re-point photos (to any path or URL) or rewrite titles, so
    those columns are refused even when a config asks them. A question of several choices (a
    multi-valued attribute) is written as its classes joined by ``separator``."""
    protected = frozenset(c for c in frame.columns if c in IMAGE_COLUMNS + TITLE_COLUMNS)
    if config is None:
        columns = [c for c in frame.columns if c != id_column and c not in protected]
        return Questions(dict.fromkeys(columns), f"a column of {data} (pass --config with predict's "
                         f"labelstudio_config.xml to add the attributes it asks)", protected)
    asked, multiple = labelling_config(config)
    return Questions({c: v for c, v in asked.items() if c != id_column and c not in protected},
                     f"a question of {config}", protected, multiple, separator)


class Export(NamedTuple):
    kind: str  # JSON (tasks with annotations), or JSON_MIN / CSV (one flat record per annotation)
    records: list


def read_export(export: str | Path) -> Export:
    """The export's records and its format, told apart by content: JSON text is Label Studio's
    JSON export when its records are tasks (``data``, ``annotations``), else JSON_MIN; other
    text is CSV."""
    try:
        text = Path(export).read_text(encoding="utf-8-sig")
    except (OSError, ValueError) as err:  # UTF-8 errors are ValueErrors
        raise ExportError(f"{export}: not a readable Label Studio export ({err})") from None
    if text.lstrip()[:1] not in ("[", "{"):
        return Export("CSV", csv_records(export, text))
    try:
        records = json.loads(text)
    except ValueError as err:
        raise ExportError(f"{export}: not a readable Label Studio JSON export ({err})") from None
    if not isinstance(records, list):
        raise ExportError(f"{export}: expected a list of tasks (Label Studio's JSON, JSON_MIN or CSV export)")
    full = not records or any(isinstance(r, dict) and ("annotations" in r or "data" in r) for r in records)
    return Export("JSON" if full else "JSON_MIN", records)


def csv_records(export, text: str) -> list[dict]:
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ExportError(f"{export}: not a readable Label Studio export (neither JSON nor CSV: {err})") from None
    return frame.to_dict("records")


def task_name(position: int, task) -> str:
    """``task 3 (id 42)``: its position in the export, and the id Label Studio shows."""
    ls_id = task.get("id") if isinstance(task, dict) else None
    return f"task {position}" + (f" (id {ls_id})" if isinstance(ls_id, (str, int)) and ls_id != "" else "")


def label_studio_labels(export: str | Path, questions: Questions, flat_questions: bool) -> list[Label]:
    """One label per (product, column) answered in the export's latest annotations; two tasks
    answering one product differently are an error, not a silent last-one-wins.
    ``flat_questions``: the questions come from a labelling config, which JSON_MIN and CSV need."""
    kind, records = read_export(export)
    if kind != "JSON" and not flat_questions:
        raise ExportError(f"{export}: a {kind} export does not say which fields are answers; pass --config with "
                          f"the labelstudio_config.xml predict wrote")
    read = task_answers if kind == "JSON" else record_answers
    labels: dict[tuple[str, str], Label] = {}
    for position, task in enumerate(records, start=1):
        name = task_name(position, task)
        try:
            product, answers = read(task, questions)
        except Invalid as err:
            raise ExportError(f"{export}: {name}{err}") from None
        for column, value in answers.items():
            earlier = labels.setdefault((product, column), Label(name, product, column, value))
            if earlier.value != value:
                raise ExportError(f"{export}: {name} gives product {product} {column} '{value}', "
                                  f"where {earlier.task} gave '{earlier.value}'; keep one answer")
    return list(labels.values())


def product_of(record: dict, fallback: str | None) -> str:
    """The product a task is about: ``clipft_id``, else (older JSON exports) ``fallback``'s field."""
    product = record.get(PRODUCT_FIELD)
    if product is None and fallback is not None:
        product = record.get(fallback)
    if isinstance(product, bool) or not isinstance(product, (str, int)) or product == "":
        where = f"data.id or data.{PRODUCT_FIELD}" if fallback else PRODUCT_FIELD
        raise Invalid(f" has no {where} (was it made by clipft predict?)")
    return str(product)


def record_answers(record, questions: Questions) -> tuple[str, dict[str, str]]:
    """The product and answers (column -> class) of one JSON_MIN or CSV record: its fields named
    after a question, a blank one unanswered."""
    if not isinstance(record, dict):
        raise Invalid(" is not an object (a Label Studio JSON_MIN record)")
    product, answers = product_of(record, None), {}
    for column in questions.classes:
        value = record.get(column)
        if value is None or value == "":
            continue
        try:
            answers[column] = single_choice(column, flat_choices(value), questions)
        except Invalid as err:
            raise Invalid(f", field {column}: {err}") from None
    return product, answers


def flat_choices(value) -> list:
    """A flat answer as a list of choices: a class, a list of them (JSON_MIN), or their JSON text
    (CSV; Label Studio writes several choices as ``{"choices": [...]}`` or a list)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]  # a class whose name looks like JSON
    if isinstance(value, dict):
        value = value.get("choices")
    return value if isinstance(value, list) else [value]


def task_answers(task, questions: Questions) -> tuple[str, dict[str, str]]:
    """The product of a task and the answers of its latest annotation (column -> class)."""
    if not isinstance(task, dict):
        raise Invalid(" is not an object (a Label Studio task)")
    data = task.get("data")
    product = product_of(data if isinstance(data, dict) else {}, "id")
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
    return product, max(answered, key=lambda a: a[0])[1] if answered else {}


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
    if not isinstance(choices, list):
        raise Invalid(f"value.choices of {column} is not a list of class names")
    return column, single_choice(column, choices, questions)


def single_choice(column: str, choices: list, questions: Questions) -> str:
    """The class picked for ``column`` (the classes, joined, for a question of several
    choices), checked against the questions."""
    if not all(isinstance(c, str) and c for c in choices):
        raise Invalid(f"value.choices of {column} is not a list of class names")
    if column in questions.multiple and choices:
        for choice in choices:
            questions.check(column, choice)
        return questions.separator.join(dict.fromkeys(choices))
    if len(set(choices)) != 1:
        raise Invalid(f"{len(choices)} choices for {column}; one class is one choice")
    questions.check(column, choices[0])
    return choices[0]


def apply_label_studio_export(export, data, out, id_column: str = "id", config=None) -> pd.DataFrame:
    """Write the catalogue with the exported labels applied to ``out`` and the list of changes
    beside it (``<out>.changes.csv``); returns the changes. ``config`` (the labelstudio_config.xml
    predict wrote) limits answers to its questions and classes, and adds a column for a question
    the catalogue lacks. Photo paths are rewritten to hold from ``out``'s folder. Nothing is
    written unless the whole export is valid."""
    frame = read_catalogue_frame(Path(data)).reset_index(drop=True)
    if id_column not in frame.columns:
        raise CatalogueError(f"{data}: no id column '{id_column}'")
    labels = label_studio_labels(export, catalogue_questions(frame, data, id_column, config), config is not None)
    rows = {v: i for i, v in enumerate(frame[id_column])}
    for label in labels:
        if label.product not in rows:
            raise ExportError(f"{export}: {label.task}: product {label.product} is not in {data}")
    prepare_output_dir(Path(out).parent, (Path(out).name, f"{Path(out).name}.changes.csv"))
    for column in dict.fromkeys(label.column for label in labels if label.column not in frame.columns):
        frame[column] = pd.Series([None] * len(frame), dtype=object)  # an attribute labelled for the first time
    changes = apply_labels(frame, [(rows[label.product], label) for label in labels])
    rebase_photos(frame, Path(data), Path(out), id_column)
    with atomic_write(out) as f:
        frame.to_csv(f, index=False)
    with atomic_write(f"{out}.changes.csv") as f:
        changes.to_csv(f, index=False)
    return changes


def rebase_photos(frame: pd.DataFrame, data: Path, out: Path, id_column: str) -> None:
    """Relative photo paths, written relative to ``out``'s folder instead of ``data``'s (URLs
    and absolute paths stay); a catalogue that finds photos by id (``images/<id>.jpg`` beside
    it) gets an image column naming them, when the output is in another folder."""
    source, target = data.parent.resolve(), out.parent.resolve()
    if source == target:
        return
    columns = [c for c in frame.columns if c in IMAGE_COLUMNS]
    if not columns:
        frame["image"] = [f"images/{product}.jpg" for product in frame[id_column]]
        columns = ["image"]
    for column in columns:
        frame[column] = [rebased(ref, source, target) for ref in frame[column]]


def rebased(ref, source: Path, target: Path):
    if not isinstance(ref, str) or not ref.strip() or is_url(ref.strip()) or os.path.isabs(ref.strip()):
        return ref
    return Path(os.path.relpath(source / ref.strip(), target)).as_posix()


def apply_labels(frame: pd.DataFrame, labels: list[tuple[int, Label]]) -> pd.DataFrame:
    """Set each (row, label) in ``frame``; returns the values that changed, before and after."""
    changes = []
    for row, label in labels:
        before = frame.at[row, label.column]
        if before != label.value:
            changes.append({"id": label.product, "column": label.column,
                            "before": None if pd.isna(before) else before, "after": label.value})
            frame.at[row, label.column] = label.value
    return pd.DataFrame(changes, columns=["id", "column", "before", "after"])
