"""Real catalogues: attributes that apply to some products only (applies_to) and values outside
a prompt file's classes (other)."""
import json

import numpy as np
import pandas as pd
import pytest

from clipft.applicability import applies, check_dependencies, dependency_order, training_labels
from clipft.calibration import Calibration
from clipft.commands.sample_data import make_catalogue
from clipft.heads import PromptHead
from clipft.prompts import PromptFileError, parse_prompt_spec
from clipft.reporting.results import label_status
from conftest import run, tiny_finetune


def spec(attribute, column=None, classes=("a", "b"), **extra):
    return parse_prompt_spec({"attribute": attribute, "column": column or attribute, "templates": ["{}"],
                              "classes": list(classes), **extra}, f"{attribute}.yaml")


def test_attributes_are_ordered_after_what_they_depend_on():
    kind = spec("kind", "articleType", ("Tshirts", "Mugs"))
    sleeve = spec("sleeve", applies_to={"kind": ["Tshirts"]})
    lid = spec("lid", applies_to={"articleType": ["Mugs"]})  # by the column that kind labels
    assert [s.attribute for s in dependency_order([sleeve, lid, kind])] == ["kind", "sleeve", "lid"]


def test_a_dependency_cycle_is_refused_naming_the_file():
    first = spec("first", applies_to={"second": ["a"]})
    second = spec("second", applies_to={"first": ["a"]})
    with pytest.raises(PromptFileError, match=r"\.yaml: key 'applies_to': .*cycle \((first|second) -> "):
        check_dependencies([first, second], [], "cat.csv")


def test_an_unknown_dependency_is_refused_naming_the_file():
    with pytest.raises(PromptFileError, match=r"sleeve\.yaml: key 'applies_to': 'kind' is neither an attribute"):
        check_dependencies([spec("sleeve", applies_to={"kind": ["Tshirts"]})], ["id", "sleeve"], "cat.csv")
    with pytest.raises(PromptFileError, match="sleeve.yaml: key 'applies_to'"):
        spec("sleeve", applies_to=["Tshirts"])


def test_the_catalogue_value_wins_and_predictions_fill_the_gaps():
    kind = spec("kind", "articleType", ("Tshirts", "Mugs"))
    sleeve = spec("sleeve", applies_to={"kind": ["Tshirts"]})
    frame = pd.DataFrame({"articleType": ["Tshirts", "Mugs", None, None, "Jeans"]})
    predicted = {"kind": np.array(["Mugs", "Tshirts", "Tshirts", "Mugs", "Tshirts"], dtype=object)}
    mask = applies([kind, sleeve], frame, np.arange(5), predicted)
    assert mask["sleeve"].tolist() == [True, False, True, False, False]  # 'Jeans' is given: not a top
    assert mask["kind"].all()


def test_out_of_list_values_are_the_other_class_and_n_a_products_have_no_label():
    color = spec("color", "baseColour", ("Black", "White"), other="Other")
    sleeve = spec("sleeve", applies_to={"articleType": ["Tshirts"]})
    frame = pd.DataFrame({"baseColour": ["Black", "Teal", None, "White"],
                          "articleType": ["Tshirts", "Mugs", "Tshirts", "Pans"],
                          "sleeve": ["Short", "Short", None, "Long"]})
    assert color.classes == ("Black", "White", "Other")
    def text(values):
        return [v if isinstance(v, str) else None for v in values]

    assert text(training_labels(color, [color, sleeve], frame)) == ["Black", "Other", None, "White"]
    # a sleeve value on a mug (a catalogue error) is no training example: sleeve does not apply there
    assert text(training_labels(sleeve, [color, sleeve], frame)) == ["Short", None, None, None]


def test_the_other_class_is_never_auto_accepted_and_n_a_is_its_own_status():
    head = PromptHead(spec("color", classes=("Black", "White"), other="Other"),
                      calibration=Calibration(threshold=0.0))
    status = label_status(head, np.array(["Black", "Other", "White"], dtype=object), np.array([0.9, 0.99, 0.8]),
                          np.array([True, True, False]))
    assert status.tolist() == ["auto", "review", "n/a"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Tops, mugs and pans; colours outside color.yaml's list on a few products."""
    folder = tmp_path_factory.mktemp("mixed")
    data = make_catalogue(folder, n=40, size=32, seed=5)
    frame = pd.read_csv(data, dtype=str)
    frame.loc[[1, 4, 9], "baseColour"] = "Teal"
    frame.to_csv(data, index=False)
    prompts = folder / "color.yaml"
    prompts.write_text("attribute: color\ncolumn: baseColour\ntemplates: ['{}']\nclasses: [Black, White, Red, Green, "
                       "Blue, Yellow, Pink, Purple, Grey, Brown, Navy Blue]\nother: Other\n")
    return data, prompts


def test_n_a_products_get_no_label_and_stay_out_of_metrics_and_review(tmp_path, mixed):
    data, color = mixed
    run_dir = tiny_finetune(data, tmp_path / "ft", tmp_path / "cache", f"[{color}, sleeve, lid]")
    run(["predict", "--run", str(run_dir), "--data", str(data), "--out", str(tmp_path / "p"),
         "--cache-dir", str(tmp_path / "cache"), "--target-precision", "0.5"])
    truth = pd.read_csv(data, dtype=str)
    predicted = pd.read_csv(tmp_path / "p" / "predictions.csv", dtype=str, keep_default_na=False)
    tops = (truth["articleType"] == "Tshirts").to_numpy()
    assert (predicted["sleeve_status"][~tops] == "n/a").all() and (predicted["sleeve"][~tops] == "").all()
    assert (predicted["lid_status"][tops] == "n/a").all() and (predicted["lid"][tops] == "").all()
    assert (predicted["sleeve_status"][tops] != "n/a").all()
    review = pd.read_csv(tmp_path / "p" / "review.csv", dtype=str)
    for attribute, kind in (("sleeve", ~tops), ("lid", tops)):
        ids = set(truth["id"][kind])
        assert not ids & set(review["id"][review["attribute"] == attribute])
    metrics = json.loads((tmp_path / "p" / "metrics.json").read_text())["attributes"]
    assert metrics["sleeve"]["n"] == tops.sum() and metrics["sleeve"]["not_applicable"] == (~tops).sum()
    assert metrics["color"]["other"]["out_of_list"] == 3 and metrics["color"]["unknown_labels"] == 0
    assert (predicted["color_status"][predicted["color"] == "Other"] != "auto").all()
    tasks = json.loads((tmp_path / "p" / "review_labelstudio.json").read_text())
    for task in tasks:
        asked = {r["from_name"] for r in task["predictions"][0]["result"]}
        assert not ({"sleeve"} & asked and task["data"]["id"] in set(truth["id"][~tops]))
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str).set_index("id")["split"]
    teal_in_train = sum(splits[i] == "train" for i in truth["id"][truth["baseColour"] == "Teal"])
    labels = json.loads((run_dir / "labels.json").read_text())
    assert teal_in_train and labels["color"]["Other"] == teal_in_train  # learnt as Other, not dropped


TREE = {"levels": [{"name": "department", "column": "department"}, {"name": "family", "column": "family"}],
        "tree": {"Apparel": {"Topwear": ["Tshirts"]}, "Home": {"Kitchen": ["Mugs", "Pans"], "Dining": ["Plates"]}}}


def test_tree_predictions_are_always_consistent_paths(tmp_path, mixed):
    data, _ = mixed
    frame = pd.read_csv(data, dtype=str)
    family = {"Tshirts": "Topwear", "Mugs": "Kitchen", "Pans": "Kitchen"}
    frame["family"] = frame["articleType"].map(family)
    frame.to_csv(tmp_path / "cat.csv", index=False)
    for image in (data.parent / "images").iterdir():
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / image.name).write_bytes(image.read_bytes())
    prompts = tmp_path / "kind.yaml"
    prompts.write_text(json.dumps({"attribute": "kind", "column": "articleType", "templates": ["a photo of {}"],
                                   "taxonomy": TREE, "classes": {"Tshirts": ["a t-shirt"]}}))
    run(["zeroshot", "--prompts", str(prompts), "--data", str(tmp_path / "cat.csv"), "--out", str(tmp_path / "z"),
         "--model", "clipft-tiny", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    predicted = pd.read_csv(tmp_path / "z" / "predictions.csv", dtype=str)
    paths = {"Tshirts": ("Apparel", "Topwear"), "Mugs": ("Home", "Kitchen"), "Pans": ("Home", "Kitchen"),
             "Plates": ("Home", "Dining")}
    assert [paths[leaf] for leaf in predicted["kind"]] == list(zip(predicted["kind_department"],
                                                                    predicted["kind_family"]))
    assert (predicted["kind_department_prob"].astype(float) >= predicted["kind_prob"].astype(float) - 1e-4).all()
    levels = json.loads((tmp_path / "z" / "metrics.json").read_text())["attributes"]["kind"]["levels"]
    assert list(levels) == ["family"] and levels["family"]["n"] == len(frame)  # no 'department' column given
    assert levels["family"]["accuracy"] == pytest.approx(
        (predicted["kind_family"].to_numpy() == frame["family"].to_numpy()).mean())


def test_a_run_folder_keeps_its_tree_inline_and_never_reads_one_by_name():
    inline = parse_prompt_spec({"attribute": "kind", "column": "k", "templates": ["{}"], "taxonomy": TREE},
                               "labeller.json: kind", files=False)
    assert inline.classes == ("Tshirts", "Mugs", "Pans", "Plates")
    with pytest.raises(PromptFileError, match="labeller.json: kind: key 'taxonomy': must be the tree itself"):
        parse_prompt_spec({"attribute": "kind", "column": "k", "templates": ["{}"], "taxonomy": "fashion"},
                          "labeller.json: kind", files=False)
    with pytest.raises(PromptFileError, match="'Jeans' is not a leaf"):
        parse_prompt_spec({"attribute": "kind", "column": "k", "templates": ["{}"], "taxonomy": TREE,
                           "classes": ["Jeans"]}, "kind.yaml")


def test_a_two_colour_product_gets_both_colours():
    from clipft.multilabel import check_multi_labels, choose_values, fit_class_thresholds, indicator

    classes = ["Black", "White", "Red"]
    proba = np.array([[0.48, 0.47, 0.05], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    truth = indicator(["Black|White", "Black", "Red"], classes, "|")
    thresholds = fit_class_thresholds(proba, truth)
    assert choose_values(proba, classes, "|", thresholds).tolist() == ["Black|White", "Black", "Red"]
    canonical, check = check_multi_labels(["White|Black", "Teal|Black", None], classes, "|")
    assert canonical[0] == "Black|White" and check.known.tolist() == [True, False, False]
    assert check.unknown == {"Teal": 1} and check.missing == 1
    head = PromptHead(spec("colours", classes=classes, multi=True), calibration=Calibration(threshold=0.0))
    assert label_status(head, np.array(["Black|White", "Black"], dtype=object), np.array([0.9, 0.9]),
                        np.ones(2, dtype=bool)).tolist() == ["review", "auto"]


def test_a_product_s_other_values_are_no_negatives_in_the_loss():
    import torch

    from clipft.losses import CaptionContrastiveLoss

    image = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # product 0 is Black and White: close to both captions
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # captions: Black, White
    ids = torch.tensor([0, 1])  # product 0's example for Black; product 1 is White
    also = torch.tensor([[False, True], [False, False]])  # White is product 0's other value
    loss = CaptionContrastiveLoss()
    plain, masked = loss(image, text, ids, 1.0), loss(image, text, ids, 1.0, also)
    assert masked < plain  # White no longer pushes the black and white product away


def test_multi_valued_colours_train_predict_and_report_multi_label_metrics(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=48, size=32, seed=2)
    truth = pd.read_csv(data, dtype=str)
    assert truth["colours"].str.contains("|", regex=False).any()  # the generated catalogue has two-colour products
    run_dir = tiny_finetune(data, tmp_path / "ft", tmp_path / "cache", "[colours]")
    calibration = json.loads((run_dir / "labeller.json").read_text())["attributes"]["colours"]["calibration"]
    assert len(calibration["class_thresholds"]) == 15
    run(["predict", "--run", str(run_dir), "--data", str(data), "--out", str(tmp_path / "p"),
         "--cache-dir", str(tmp_path / "cache")])
    predicted = pd.read_csv(tmp_path / "p" / "predictions.csv", dtype=str)
    classes = set(json.loads((run_dir / "labeller.json").read_text())["attributes"]["colours"]["prompts"]["classes"])
    assert all(set(v.split("|")) <= classes for v in predicted["colours"])
    metrics = json.loads((tmp_path / "p" / "metrics.json").read_text())["attributes"]["colours"]
    assert {"subset_accuracy", "micro_f1", "macro_f1", "samples_f1", "hamming_loss"} <= set(metrics)
    assert metrics["n"] == 48 and not (tmp_path / "p" / "confusion_colours.png").exists()
    config = (tmp_path / "p" / "labelstudio_config.xml").read_text()
    assert 'name="colours" toName="image" choice="multiple"' in config
    # a person picks two colours in Label Studio; import-labels writes them back joined
    task = json.loads((tmp_path / "p" / "review_labelstudio.json").read_text())[0]
    answer = {"from_name": "colours", "to_name": "image", "type": "choices", "value": {"choices": ["White", "Black"]}}
    (tmp_path / "export.json").write_text(json.dumps([task | {"annotations": [{"result": [answer]}]}]))
    run(["import-labels", "--labelstudio", str(tmp_path / "export.json"), "--data", str(data), "--out",
         str(tmp_path / "corrected.csv"), "--config", str(tmp_path / "p" / "labelstudio_config.xml")])
    corrected = pd.read_csv(tmp_path / "corrected.csv", dtype=str).set_index("id")
    assert corrected.loc[task["data"]["clipft_id"], "colours"] == "White|Black"


def test_audit_reads_multi_valued_labels(tmp_path):
    from clipft.audit import multilabel_issues

    rng = np.random.default_rng(0)
    classes = ["Black", "White", "Red"]
    X = rng.normal(size=(90, 3))
    given = np.array(["|".join(c for c, x in zip(classes, row) if x > 0) or "Red" for row in X], dtype=object)
    flipped = [3, 17, 40]
    for i in flipped:
        given[i] = "Black|White|Red" if given[i] != "Black|White|Red" else "Black"
    issues, summary = multilabel_issues(np.arange(90).astype(str), given, X * 4, classes, "|", folds=3, seed=0)
    assert summary["audited"] == 90 and summary["classes"] == 3
    assert set(map(str, flipped)) <= set(issues["id"].head(10))
