"""clipft report: one self-contained HTML page from run folders."""
import base64
import json
import re

import pandas as pd
import pytest
from PIL import Image

from clipft.commands.sample_data import make_catalogue
from clipft.reporting.html_report import open_run, side_by_side
from conftest import run, tiny_finetune


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    data = make_catalogue(tmp / "cat", n=48, size=32, seed=2)
    cache = str(tmp / "cache")
    tiny_finetune(data, tmp / "ft", tmp / "cache")
    run(["predict", "--run", str(tmp / "ft"), "--data", str(data), "--out", str(tmp / "predict"), "--cache-dir", cache])
    run(["zeroshot", "--prompts", "color", "--data", str(data), "--model", "clipft-tiny", "--out", str(tmp / "zs"),
         "--cache-dir", cache])
    return tmp


def test_scoring_runs_keep_their_most_confident_mistakes(runs):
    mistakes = pd.read_csv(runs / "predict" / "mistakes.csv", dtype=str)
    predictions = pd.read_csv(runs / "predict" / "predictions.csv", dtype=str).set_index("id")
    catalogue = pd.read_csv(runs / "cat" / "catalogue.csv", dtype=str).set_index("id")
    colour = mistakes[mistakes["attribute"] == "color"]
    assert len(colour) and (colour["label"] != colour["predicted"]).all()
    assert (colour["label"] == catalogue.loc[colour["id"], "baseColour"].to_numpy()).all()
    assert (colour["predicted"] == predictions.loc[colour["id"], "color"].to_numpy()).all()
    probs = colour["probability"].astype(float).to_numpy()
    assert (probs[:-1] >= probs[1:]).all()  # surest first
    wrong = predictions["color"] != catalogue.loc[predictions.index, "baseColour"]
    assert len(colour) == min(48, int(wrong.sum()))


def test_the_report_inlines_everything_and_puts_runs_side_by_side(runs):
    out = runs / "report.html"
    run(["report", str(runs / "ft"), str(runs / "predict"), str(runs / "zs"), "--out", str(out)])
    page = out.read_text(encoding="utf-8")
    assert [open_run(runs / n).kind for n in ("ft", "predict", "zs")] == ["finetune", "predict", "zeroshot"]
    table = side_by_side([open_run(runs / n) for n in ("ft", "predict", "zs")])
    assert set(table.columns.get_level_values(0)) == {"ft", "predict", "zs"}
    comparison = pd.read_csv(runs / "ft" / "comparison.csv")
    tuned = comparison[(comparison["model"] == "fine-tuned") & (comparison["attribute"] == "color")]["accuracy"].iloc[0]
    assert table.loc["color", ("ft", "fine-tuned")] == pytest.approx(tuned)
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r'(href|src)="https?:', page)
    for name in ("curves.png", "risk_coverage.png", "confusion_color.png"):
        assert name in page
    assert "color: most confident mistakes" in page
    base64.b64decode(sources[0].split(",", 1)[1], validate=True)


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    result = run(["report", str(tmp_path), "--out", str(tmp_path / "r.html")], expect=1)
    assert "not a clipft run folder" in result.output


def test_top_k_text_is_the_three_likeliest_classes_with_three_decimals():
    import numpy as np

    from clipft.reporting.results import top_k

    proba = np.random.default_rng(0).dirichlet(np.ones(5), size=200)
    classes = ["a", "b", "c", "d", "e"]
    expected = [";".join(f"{classes[j]}:{row[j]:.3f}" for j in np.argsort(-row)[:3]) for row in proba]
    assert top_k(proba, classes) == expected
    assert top_k(np.array([[0.0, 1.0]]), ["x", "y"]) == ["y:1.000;x:0.000"]


def test_probe_runs_report_each_classifier_and_input(tmp_path, sample_catalogue):
    from clipft.reporting.html_report import headline, open_run

    run(["probe", "--set", f"data={sample_catalogue}", "--set", "prompts=[color]", "--set", "model=clipft-tiny",
         "--set", f"cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "probe"), "--quiet"])
    probe = open_run(tmp_path / "probe")
    table = headline(probe)
    expected = pd.read_csv(tmp_path / "probe" / "probe.csv").query("titles == 'present'")
    assert probe.kind == "probe" and list(table.columns) == ["logistic (image)"]
    assert table.loc["color", "logistic (image)"] == pytest.approx(expected["accuracy"].iloc[0])


def scoring_run(folder, mistakes=None, data=None):
    """A predict run folder as the report sees it: metrics.json (naming the catalogue ``data`` when
    given) and, when given, mistakes.csv rows."""
    folder.mkdir()
    info = {"command": "predict"} | ({"data": str(data)} if data else {})
    (folder / "metrics.json").write_text(json.dumps({"run": info, "attributes": {"lid": {"n": 2, "accuracy": 0.0}}}))
    if mistakes is not None:
        columns = ["attribute", "id", "image", "label", "predicted", "probability"]
        pd.DataFrame(mistakes, columns=columns).to_csv(folder / "mistakes.csv", index=False)
    return folder


def gallery_sources(page):
    return re.findall(r'<figure><img src="([^"]*)" alt="product', page)


def test_only_image_files_inside_the_run_folder_are_inlined(tmp_path, caplog):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET api key")
    Image.new("RGB", (9, 7), "blue").save(outside / "theirs.png")
    folder = scoring_run(tmp_path / "run")
    Image.new("RGB", (5, 5), "red").save(folder / "curves.png")
    (folder / "key.png").symlink_to(outside / "secret.txt")
    (folder / "borrowed.png").symlink_to(outside / "theirs.png")
    (folder / "notes.png").write_text("not a picture")
    run(["report", str(folder), "--out", str(tmp_path / "r.html")])
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    plots = re.findall(r'<img class="plot" src="data:image/png;base64,([^"]*)"', page)
    assert [base64.b64decode(p) for p in plots] == [(folder / "curves.png").read_bytes()]
    for leaked in (outside / "secret.txt", outside / "theirs.png", folder / "notes.png"):
        assert base64.b64encode(leaked.read_bytes()).decode() not in page
    assert "TOP-SECRET" not in page and "not a picture" not in page
    assert "key.png: left out of the report: it links to" in caplog.text
    assert "borrowed.png: left out of the report: it links to" in caplog.text
    assert "notes.png: left out of the report: not a PNG or JPEG image" in caplog.text


def test_classes_named_na_or_none_and_photos_that_are_not_images_are_shown(tmp_path, monkeypatch, caplog):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (20, 20), "green").save(photos / "mug.png")
    (photos / "broken.jpg").write_text("not a photo")
    (photos / "catalogue.csv").write_text("id,image\n")  # the photos are the scored catalogue's
    # one photo relative to the run folder, one absolute; the report runs from a third folder
    folder = scoring_run(tmp_path / "run", [["lid", "NA", "../photos/mug.png", "NA", "None", 0.9],
                                            ["lid", "None", str(photos / "broken.jpg"), "None", "NA", 0.8]],
                         data=photos / "catalogue.csv")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    run(["report", str(folder), "--out", "r.html"])
    page = (tmp_path / "cwd" / "r.html").read_text(encoding="utf-8")
    assert "NA &rarr; None (0.90)<br>id NA" in page and "None &rarr; NA (0.80)<br>id None" in page
    thumbnail, placeholder = gallery_sources(page)
    assert thumbnail.startswith("data:image/jpeg;base64,")
    assert placeholder.startswith("data:image/svg+xml;base64,")
    assert b"not an image" in base64.b64decode(placeholder.split(",", 1)[1])
    assert "broken.jpg: not shown in the report" in caplog.text


def test_a_mistakes_file_without_its_columns_is_named(tmp_path):
    folder = scoring_run(tmp_path / "run")
    (folder / "mistakes.csv").write_text("attribute,id\nlid,1\n")
    result = run(["report", str(folder), "--out", str(tmp_path / "r.html")], expect=1)
    assert "mistakes.csv: no column image, label, predicted, probability" in result.output
    assert not (tmp_path / "r.html").exists()


def test_thumbnails_are_found_when_the_report_runs_from_another_folder(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(runs)  # predict with paths relative to its folder, as people type them
    run(["predict", "--run", "ft", "--data", "cat/catalogue.csv", "--out", "relative/predict", "--cache-dir", "cache"])
    monkeypatch.chdir(tmp_path)
    run(["report", str(runs / "relative" / "predict"), "--out", "r.html"])
    sources = gallery_sources((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)


def placeholder_text(source):
    return base64.b64decode(source.split(",", 1)[1])


def test_photos_outside_the_run_the_current_and_the_catalogue_folder_are_not_inlined(tmp_path, monkeypatch, caplog):
    for name, colour in (("private", "red"), ("catalogue", "green")):
        (tmp_path / name).mkdir()
        Image.new("RGB", (20, 20), colour).save(tmp_path / name / "photo.png")
    (tmp_path / "catalogue" / "catalogue.csv").write_text("id,image\n")
    # an absolute path and a relative one reached through the run folder's parents, both private
    folder = scoring_run(tmp_path / "run", [["lid", "1", str(tmp_path / "private" / "photo.png"), "a", "b", 0.9],
                                            ["lid", "2", "private/photo.png", "a", "b", 0.8],
                                            ["lid", "3", "catalogue/photo.png", "a", "b", 0.7]],
                         data=tmp_path / "catalogue" / "catalogue.csv")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    run(["report", str(folder), "--out", "r.html"])
    absolute, relative, shown = gallery_sources((tmp_path / "cwd" / "r.html").read_text(encoding="utf-8"))
    for refused in (absolute, relative):
        assert b"photo outside the catalogue&#x27;s folder" in placeholder_text(refused)
    assert shown.startswith("data:image/jpeg;base64,")
    assert caplog.text.count("left out of the report: ") == 2 and "private/photo.png is outside" in caplog.text


def test_photos_named_by_url_are_linked_not_fetched(tmp_path, caplog):
    url = "https://127.0.0.1:9/mug.jpg?a=1&b=2"  # a closed port: fetching it would fail the report
    folder = scoring_run(tmp_path / "run", [["lid", "1", url, "a", "b", 0.9]])
    run(["report", str(folder), "--out", str(tmp_path / "r.html")])
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    (source,) = gallery_sources(page)
    assert b"remote photo" in placeholder_text(source)
    assert '<a href="https://127.0.0.1:9/mug.jpg?a=1&amp;b=2" rel="noreferrer">remote photo</a>' in page
    assert 'title="https://127.0.0.1:9/mug.jpg?a=1&amp;b=2"' in page
    assert "not found" not in caplog.text


@pytest.mark.parametrize("attributes", [["lid"], {"lid": 0.5}, "lid"])
def test_metrics_whose_attributes_are_not_metrics_per_attribute_are_named(attributes, tmp_path):
    folder = scoring_run(tmp_path / "run")
    (folder / "metrics.json").write_text(json.dumps({"run": {"command": "predict"}, "attributes": attributes}))
    result = run(["report", str(folder), "--out", str(tmp_path / "r.html")], expect=1)
    assert f"{folder / 'metrics.json'}: not a clipft metrics file ('attributes' must map" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
