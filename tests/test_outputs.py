"""Outputs are all or nothing: locked folders, files that appear together, leftovers of killed
runs cleaned, full disks and unusable caches as one line, and what a run would otherwise do silently."""
import errno
import fcntl
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from clipft import fileio
from clipft.cache.store import CacheError, EmbeddingStore
from clipft.commands.sample_data import make_catalogue
from conftest import REPO, run, tiny_finetune

HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process that has finished (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    data = make_catalogue(root / "cat", n=30, size=32, seed=2)
    probe = root / "probe"
    run(["probe", "--set", f"data={data}", "--set", f"prompts=[{REPO}/prompts/color.yaml, {REPO}/prompts/lid.yaml]",
         "--set", "model=clipft-tiny", "--set", f"cache_dir={root / 'cache'}", "--classifier", "logistic",
         "--inputs", "image", "--out", str(probe), "--quiet"])
    return root, data, probe


def predict(setup, out, *extra, expect=0, data=None):
    root, catalogue, probe = setup
    return run(["predict", "--run", str(probe), "--data", str(data or catalogue), "--out", str(out),
                "--cache-dir", str(root / "cache"), *extra], expect=expect)


def one_error_line(result) -> str:
    """The run's error: exactly one line (progress bars aside), no traceback."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def snapshot(folder):
    """The folder's outputs (its lock file, rewritten by every run, aside)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != fileio.LOCK_FILE}


def test_a_folder_in_use_is_refused_and_a_dead_runs_lock_is_free(setup, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / fileio.LOCK_FILE).write_text(json.dumps({"pid": 4242, "host": "elsewhere", "since": "today"}))
    with open(out / fileio.LOCK_FILE) as held:  # another run holds the lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = predict(setup, out, expect=1)
    assert "in use by another clipft run (pid 4242 on elsewhere, since today)" in one_error_line(result)
    assert not (out / "predictions.csv").exists()
    # the holder is gone (its lock released with it): the file left behind locks nothing
    predict(setup, out)
    assert (out / "predictions.csv").is_file()
    assert json.loads((out / fileio.LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_failed_run_leaves_the_previous_outputs_whole(setup, tmp_path, monkeypatch):
    out = tmp_path / "out"
    predict(setup, out)
    before = snapshot(out)
    assert {"predictions.csv", "metrics.json", "review.csv"} <= set(before)

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "metrics.json"))

    monkeypatch.setattr("clipft.reporting.scoring_outputs.write_json", fail)
    result = predict(setup, out, "--limit", "10", expect=1)
    assert "metrics.json: No space left on device; free some disk space" in one_error_line(result)
    assert snapshot(out) == before  # nothing of the failed run, not even its predictions.csv


def test_outputs_a_run_does_not_write_are_removed_so_runs_never_mix(setup, tmp_path):
    root, catalogue, _ = setup
    out = tmp_path / "out"
    predict(setup, out)
    assert (out / "metrics.json").is_file() and json.loads((out / "metrics.json").read_text())["attributes"]
    (out / "skipped.csv").write_text("id\nfrom an older run\n")
    predict(setup, out)
    assert not (out / "skipped.csv").exists()  # this run skipped nothing


def test_leftovers_of_killed_runs_are_cleaned_and_live_ones_kept(setup, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead, live = f"{fileio._HOST}-{dead_pid()}", f"{fileio._HOST}-{os.getpid()}"
    (out / f".predictions.csv.{dead}.x1y2.tmp").write_text("half")
    (out / f".staging-{dead}").mkdir()
    (out / f".staging-{dead}" / "metrics.json").write_text("{}")
    (out / f".review.csv.{live}.abcd.tmp").write_text("being written")
    predict(setup, out)
    names = {p.name for p in out.iterdir()}
    assert f".predictions.csv.{dead}.x1y2.tmp" not in names and f".staging-{dead}" not in names
    assert f".review.csv.{live}.abcd.tmp" in names and "predictions.csv" in names


def test_a_full_disk_while_caching_is_one_line_and_the_cache_stays_usable(setup, tmp_path, monkeypatch):
    root, catalogue, probe = setup
    cache = tmp_path / "cache"
    real_fsync = os.fsync
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    result = run(["predict", "--run", str(probe), "--data", str(catalogue), "--out", str(tmp_path / "p"),
                  "--cache-dir", str(cache)], expect=1)
    assert "cannot write to the embedding cache (No space left on device)" in one_error_line(result)
    monkeypatch.setattr(fileio.os, "fsync", real_fsync)
    assert not [p for p in cache.rglob("*") if p.suffix == ".tmp"]
    run(["predict", "--run", str(probe), "--data", str(catalogue), "--out", str(tmp_path / "p"),
         "--cache-dir", str(cache)])


def test_a_read_only_cache_is_one_line_naming_it(setup, tmp_path, monkeypatch):
    root, catalogue, probe = setup
    cache = tmp_path / "ro-cache"
    real_mkstemp = fileio.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if str(dir).startswith(str(cache)):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    result = run(["predict", "--run", str(probe), "--data", str(catalogue), "--out", str(tmp_path / "p"),
                  "--cache-dir", str(cache)], expect=1)
    line = one_error_line(result)
    assert "cannot write to the embedding cache (Read-only file system)" in line and "--cache-dir" in line


def test_a_cache_path_that_is_a_file_is_one_line(setup, tmp_path, monkeypatch):
    root, catalogue, probe = setup
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    args = ["predict", "--run", str(probe), "--data", str(catalogue), "--out", str(tmp_path / "p")]
    assert "is a file" in run([*args, "--cache-dir", str(blocker)], expect=2).output  # click checks the option
    monkeypatch.setenv("CLIPFT_CACHE", str(blocker))
    result = run(args, expect=1)
    assert f"{blocker}: is a file where the embedding cache needs a folder" in one_error_line(result)


def test_a_cache_shard_of_another_width_is_named(tmp_path):
    EmbeddingStore(tmp_path).add(["a", "b"], np.ones((2, 4)))
    EmbeddingStore(tmp_path).add(["c"], np.ones((1, 6)))
    with pytest.raises(CacheError, match=r"shard-.*keys\.npy: holds embeddings \(6,\) wide .*delete it"):
        EmbeddingStore(tmp_path)


def test_a_title_trained_run_without_titles_says_so(tmp_path, caplog):
    data = make_catalogue(tmp_path / "cat", n=24, size=32, seed=3)
    run_dir = tiny_finetune(data, tmp_path / "ft", tmp_path / "cache", "[color]", "inputs=fusion")
    untitled = data.parent / "untitled.csv"
    pd.read_csv(data, dtype=str).drop(columns=["title"]).to_csv(untitled, index=False)
    out = tmp_path / "p"
    with caplog.at_level("WARNING", logger="clipft"):
        run(["predict", "--run", str(run_dir), "--data", str(untitled), "--out", str(out), "--cache-dir",
             str(tmp_path / "cache")])
    warnings = [r.getMessage() for r in caplog.records if "no title column 'title'" in r.getMessage()]
    assert len(warnings) == 1 and "photo alone" in warnings[0]
    assert json.loads((out / "metrics.json").read_text())["run"]["title_column"] is None
    assert set(pd.read_csv(out / "predictions.csv")["scored_on"]) == {"image"}


def test_audit_of_an_attribute_with_no_labelled_products(setup, tmp_path):
    root, catalogue, probe = setup
    frame = pd.read_csv(catalogue, dtype=str)
    tshirts = catalogue.parent / "tshirts.csv"
    frame[frame["articleType"] == "Tshirts"].to_csv(tshirts, index=False)
    assert frame.loc[frame["articleType"] == "Tshirts", "lid"].isna().all()
    out = tmp_path / "audit"
    run(["audit", "--run", str(probe), "--data", str(tshirts), "--out", str(out), "--cache-dir", str(root / "cache"),
         "--folds", "2"])
    summary = json.loads((out / "summary.json").read_text())["attributes"]
    assert summary["lid"] == {"audited": 0, "left_out_rare_classes": 0, "classes": 0, "issues": 0}
    assert summary["color"]["audited"] > 0
    assert set(pd.read_csv(out / "label_issues.csv")["attribute"].dropna()) <= {"color"}
    assert not (out / "suspects_lid.png").exists()
    only_lid = tmp_path / "audit-lid"
    run(["audit", "--run", str(probe), "--data", str(tshirts), "--out", str(only_lid), "--cache-dir",
         str(root / "cache"), "--folds", "2", "--attributes", "lid"])
    assert pd.read_csv(only_lid / "label_issues.csv").empty
    assert json.loads((only_lid / "summary.json").read_text())["attributes"]["lid"]["audited"] == 0


def test_a_folder_whose_run_died_while_publishing_is_not_reported_until_run_again(setup, tmp_path):
    out = tmp_path / "out"
    predict(setup, out)
    (out / fileio.INCOMPLETE_FILE).write_text("killed while moving its outputs in")
    result = run(["report", str(out), "--out", str(tmp_path / "r.html")], expect=1)
    assert "a run stopped while moving its outputs in" in one_error_line(result)
    predict(setup, out)
    assert not (out / fileio.INCOMPLETE_FILE).exists()
    run(["report", str(out), "--out", str(tmp_path / "r.html")])


def test_label_studio_config_escapes_any_class_name():
    from xml.etree import ElementTree

    from clipft.heads import PromptHead
    from clipft.prompts import parse_prompt_spec
    from clipft.reporting.review import label_studio_config

    spec = parse_prompt_spec({"attribute": 'fit "cut"', "column": "a&b", "templates": ["{}"],
                              "classes": {'Black & White': ["black and white"], '<Tall> "slim"': ["tall"]}}, "test")
    root = ElementTree.fromstring(label_studio_config({"fit": PromptHead(spec)}))
    assert [c.get("value") for c in root.iter("Choice")] == ['Black & White', '<Tall> "slim"']
    assert root.find("Choices").get("name") == "a&b" and root.find("Header").get("value") == 'fit "cut"'


def test_label_studio_tasks_keep_photo_urls_and_prefix_paths():
    from clipft.reporting.review import task_image

    assert task_image("https://cdn.example/p/1.jpg", "/data/local-files/?d=") == "https://cdn.example/p/1.jpg"
    assert task_image("images/1.jpg", "/data/local-files/?d=") == "/data/local-files/?d=images/1.jpg"
