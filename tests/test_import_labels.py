"""clipft import-labels: a Label Studio export is checked whole, and a malformed one is named
(file, task position and id) with nothing written."""
import json

import pandas as pd
import pytest

from clipft.commands.import_labels import ExportError, apply_label_studio_export
from clipft.commands.sample_data import make_catalogue
from conftest import run

CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="baseColour" toName="image" choice="single"><Choice value="Teal"/><Choice value="Olive"/></Choices>
</View>"""


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return make_catalogue(tmp_path_factory.mktemp("labels"), n=6, size=16, seed=0)


def answer(column="baseColour", choices=("Teal",), kind="choices"):
    return {"from_name": column, "to_name": "image", "type": kind, "value": {"choices": list(choices)}}


def task(product="00001", *results, ls_id=7):
    return {"id": ls_id, "data": {"id": product, "image": "x.jpg"}, "annotations": [{"result": list(results)}]}


GOOD = task("00000", answer(choices=["Olive"]), ls_id=3)  # first in every export: the bad one is task 2

MALFORMED = {
    "task not an object": ("00001", "task 2 is not an object"),
    "no data": ({"id": 7, "annotations": []}, "task 2 (id 7) has no data.id or data.clipft_id"),
    "no product id": ({"id": 7, "data": {"image": "x.jpg"}}, "task 2 (id 7) has no data.id or data.clipft_id"),
    "product id a list": ({"id": 7, "data": {"id": ["00001"]}}, "task 2 (id 7) has no data.id or data.clipft_id"),
    "annotations not a list": ({"id": 7, "data": {"id": "00001"}, "annotations": {"result": []}},
                               "task 2 (id 7) has annotations that are not a list"),
    "annotation not an object": ({"id": 7, "data": {"id": "00001"}, "annotations": ["Teal"]},
                                 "task 2 (id 7), annotation 1: not an object"),
    "result not a list": ({"id": 7, "data": {"id": "00001"}, "annotations": [{"result": answer()}]},
                          "task 2 (id 7), annotation 1: its result is not a list"),
    "result not an object": (task("00001", "Teal"), "task 2 (id 7), annotation 1, result 1: not an object"),
    "not a choices result": (task("00001", answer(kind="textarea")), "result 1: type 'textarea'"),
    "no from_name": (task("00001", answer(column=None)), "result 1: no from_name"),
    "unknown attribute": (task("00001", answer(column="colour")), "result 1: answers 'colour', which is not a column of"),
    "the id column": (task("00001", answer(column="id")), "result 1: answers 'id', which is not a column of"),
    "choices a string": (task("00001", {**answer(), "value": {"choices": "Teal"}}),
                         "result 1: value.choices of baseColour is not a list of class names"),
    "choices not text": (task("00001", answer(choices=[3])), "value.choices of baseColour is not a list"),
    "no value": (task("00001", {**answer(), "value": None}), "value.choices of baseColour is not a list"),
    "no choice": (task("00001", answer(choices=[])), "result 1: 0 choices for baseColour"),
    "two choices": (task("00001", answer(choices=["Teal", "Olive"])), "result 1: 2 choices for baseColour"),
    "two answers": (task("00001", answer(), answer(choices=["Olive"])),
                    "task 2 (id 7), annotation 1, result 2: a second answer for baseColour, 'Olive' after 'Teal'"),
    "unknown product": (task("99999", answer()), "task 2 (id 7): product 99999 is not in"),
    "two tasks disagree": (task("00000", answer()),
                           "task 2 (id 7) gives product 00000 baseColour 'Teal', where task 1 (id 3) gave 'Olive'"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_task_is_named_and_nothing_is_written(case, catalogue, tmp_path):
    bad, message = MALFORMED[case]
    export = tmp_path / "export.json"
    export.write_text(json.dumps([GOOD, bad]))
    out = tmp_path / "out" / "corrected.csv"
    result = run(["import-labels", "--labelstudio", str(export), "--data", str(catalogue), "--out", str(out)], expect=1)
    assert f"{export}: " in result.output and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable Label Studio JSON export"),
    ('{"tasks": []}', "expected a list of tasks"),
])
def test_an_export_that_is_not_a_list_of_tasks_is_named(content, message, catalogue, tmp_path):
    (tmp_path / "export.json").write_text(content)
    out = tmp_path / "out" / "corrected.csv"
    result = run(["import-labels", "--labelstudio", str(tmp_path / "export.json"), "--data", str(catalogue),
                  "--out", str(out)], expect=1)
    assert f"{tmp_path / 'export.json'}: {message}" in result.output
    assert not (tmp_path / "out").exists()


def test_the_labelling_config_limits_answers_to_its_questions_and_classes(catalogue, tmp_path):
    (tmp_path / "config.xml").write_text(CONFIG)
    export, out = tmp_path / "export.json", tmp_path / "out" / "corrected.csv"
    for results, message in [([answer(choices=["Pinkish"])], "'Pinkish' is not a class of baseColour (Olive, Teal)"),
                             ([answer(column="lid", choices=["With lid"])], "answers 'lid', which is not a question of")]:
        export.write_text(json.dumps([GOOD, task("00001", *results)]))
        with pytest.raises(ExportError, match=r"task 2 \(id 7\), annotation 1, result 1: ") as err:
            apply_label_studio_export(export, catalogue, out, config=tmp_path / "config.xml")
        assert message in str(err.value)
        assert not (tmp_path / "out").exists()
    export.write_text(json.dumps([GOOD, task("00001", answer())]))
    changes = apply_label_studio_export(export, catalogue, out, config=tmp_path / "config.xml")
    corrected = pd.read_csv(out, dtype=str).set_index("id")
    assert corrected.loc[["00000", "00001"], "baseColour"].tolist() == ["Olive", "Teal"]
    assert set(changes["id"]) <= {"00000", "00001"}


def test_a_labelling_config_that_is_not_one_is_named(catalogue, tmp_path):
    (tmp_path / "config.xml").write_text("<View><Text name='title' value='$title'/></View>")
    (tmp_path / "export.json").write_text(json.dumps([GOOD]))
    with pytest.raises(ExportError, match="config.xml: no <Choices> question"):
        apply_label_studio_export(tmp_path / "export.json", catalogue, tmp_path / "c.csv", config=tmp_path / "config.xml")
    (tmp_path / "config.xml").write_text("<View>")
    with pytest.raises(ExportError, match="config.xml: not a readable Label Studio labelling config"):
        apply_label_studio_export(tmp_path / "export.json", catalogue, tmp_path / "c.csv", config=tmp_path / "config.xml")


@pytest.mark.parametrize("column, value", [("image", "/home/someone/.ssh/id_rsa"),
                                           ("image", "https://example.invalid/x.jpg"), ("title", "Renamed")])
def test_an_export_may_not_answer_the_photo_or_title_column(column, value, catalogue, tmp_path):
    export, out = tmp_path / "export.json", tmp_path / "out" / "corrected.csv"
    export.write_text(json.dumps([GOOD, task("00001", answer(column=column, choices=[value]))]))
    result = run(["import-labels", "--labelstudio", str(export), "--data", str(catalogue), "--out", str(out)], expect=1)
    assert f"task 2 (id 7), annotation 1, result 1: answers '{column}', the catalogue's photo or title column" \
        in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_choice_without_a_value_is_refused_in_the_labelling_config(catalogue, tmp_path):
    (tmp_path / "config.xml").write_text(CONFIG.replace('<Choice value="Olive"/>', "<Choice/>"))
    (tmp_path / "export.json").write_text(json.dumps([GOOD, task("00001", answer(choices=["Pinkish"]))]))
    with pytest.raises(ExportError, match="config.xml: question 'baseColour' has a <Choice> without a value"):
        apply_label_studio_export(tmp_path / "export.json", catalogue, tmp_path / "out" / "c.csv",
                                  config=tmp_path / "config.xml")
    assert not (tmp_path / "out").exists()


def flat_exports(tmp_path, rows):
    """The same answers as Label Studio's JSON_MIN and CSV exports write them: the task data
    flattened, ``id`` Label Studio's task id, one field per question."""
    json_min, csv = tmp_path / "export_min.json", tmp_path / "export.csv"
    json_min.write_text(json.dumps(rows))
    pd.DataFrame([{k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows]) \
        .to_csv(csv, index=False)
    return json_min, csv


def without_labels(catalogue, folder):
    """The catalogue as predict gets it: no label columns yet."""
    frame = pd.read_csv(catalogue, dtype=str).drop(columns=["baseColour", "lid"])
    frame["image"] = [str(catalogue.parent / p) for p in frame["image"]]  # absolute: stays as it is
    frame.to_csv(folder / "new.csv", index=False)
    return folder / "new.csv"


def test_every_export_format_keys_tasks_by_clipft_id_and_adds_missing_columns(catalogue, tmp_path):
    (tmp_path / "config.xml").write_text(CONFIG)
    data = without_labels(catalogue, tmp_path)
    full = tmp_path / "export.json"
    full.write_text(json.dumps([{"id": 41, "data": {"id": 41, "clipft_id": "00002", "image": "x.jpg"},
                                 "annotations": [{"result": [answer(choices=["Olive"])]}]}]))
    json_min, csv = flat_exports(tmp_path, [{"image": "x.jpg", "clipft_id": "00002", "id": 41, "baseColour": "Olive",
                                             "annotator": 1, "annotation_id": 5, "lead_time": 2.5}])
    corrected = []
    for export in (full, json_min, csv):
        out = tmp_path / export.stem / "corrected.csv"
        changes = apply_label_studio_export(export, data, out, config=tmp_path / "config.xml")
        assert changes.to_dict("records") == [{"id": "00002", "column": "baseColour", "before": None, "after": "Olive"}]
        corrected.append(out.read_text())
    assert corrected[0] == corrected[1] == corrected[2]
    frame = pd.read_csv(tmp_path / "export" / "corrected.csv", dtype=str).set_index("id")
    assert frame.loc["00002", "baseColour"] == "Olive" and frame["baseColour"].isna().sum() == len(frame) - 1


def test_flat_exports_need_the_config_and_refuse_several_choices(catalogue, tmp_path):
    (tmp_path / "config.xml").write_text(CONFIG)
    json_min, csv = flat_exports(tmp_path, [{"clipft_id": "00001", "id": 9, "baseColour": ["Teal", "Olive"]}])
    for export in (json_min, csv):
        result = run(["import-labels", "--labelstudio", str(export), "--data", str(catalogue),
                      "--out", str(tmp_path / "out" / "c.csv")], expect=1)
        assert "export does not say which fields are answers; pass --config" in result.output
        with pytest.raises(ExportError, match=r"task 1 \(id 9\), field baseColour: 2 choices for baseColour"):
            apply_label_studio_export(export, catalogue, tmp_path / "out" / "c.csv", config=tmp_path / "config.xml")
    json_min.write_text(json.dumps([{"id": 9, "baseColour": "Teal"}]))
    with pytest.raises(ExportError, match=r"task 1 \(id 9\) has no clipft_id"):
        apply_label_studio_export(json_min, catalogue, tmp_path / "out" / "c.csv", config=tmp_path / "config.xml")
    assert not (tmp_path / "out").exists()


def test_relative_photo_paths_hold_from_the_output_folder(catalogue, tmp_path):
    frame = pd.read_csv(catalogue, dtype=str)
    frame.loc[1, "image"] = "https://cdn.example/1.jpg"
    frame.loc[2, "image"] = str(catalogue.parent / "images" / "00002.jpg")
    frame.to_csv(catalogue.parent / "mixed.csv", index=False)
    export = tmp_path / "export.json"
    export.write_text(json.dumps([GOOD]))
    out = tmp_path / "elsewhere" / "deeper" / "corrected.csv"
    apply_label_studio_export(export, catalogue.parent / "mixed.csv", out)
    images = pd.read_csv(out, dtype=str)["image"]
    assert images[1] == "https://cdn.example/1.jpg" and images[2] == frame.loc[2, "image"]
    assert (out.parent / images[0]).resolve() == (catalogue.parent / "images" / "00000.jpg").resolve()
    assert not images[0].startswith("/")
    assert all((out.parent / i).is_file() for i in images if not i.startswith("https:"))
    pd.read_csv(catalogue, dtype=str).drop(columns=["image"]).to_csv(catalogue.parent / "by_id.csv", index=False)
    apply_label_studio_export(export, catalogue.parent / "by_id.csv", out)  # photos found as images/<id>.jpg
    assert all((out.parent / i).is_file() for i in pd.read_csv(out, dtype=str)["image"])
