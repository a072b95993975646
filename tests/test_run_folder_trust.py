"""A run folder is data, never code: what ``Labeller.load`` (predict, audit, app --run) refuses."""
import io
import json
import shutil
import zipfile

import numpy as np
import pytest
import skops.io as sio

from clipft.commands.sample_data import make_catalogue
from clipft.labeller import Labeller
from clipft.labeller_files import LabellerError, load_classifier
from clipft.probe import CLASSIFIERS, make_classifier
from conftest import REPO, run


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    data = make_catalogue(root / "cat", n=24, size=32, seed=1)
    out = root / "probe"
    run(["probe", "--set", f"data={data}", "--set", f"prompts=[{REPO}/prompts/color.yaml]", "--set", "model=clipft-tiny",
         "--set", f"cache_dir={root / 'cache'}", "--classifier", "logistic", "--inputs", "image", "--out", str(out),
         "--quiet"])
    return out, data


@pytest.fixture
def run_copy(probe_run, tmp_path):
    out, data = probe_run
    return shutil.copytree(out, tmp_path / "run"), data


def exec_skops(path, marker):
    """A .skops file whose loading, if trusted, calls builtins.exec on code that writes ``marker``."""
    code = sio.dumps((f"open({str(marker)!r}, 'w').write('ran')",))
    args = json.loads(zipfile.ZipFile(io.BytesIO(code)).read("schema.json"))
    node = {"__class__": "exec", "__module__": "builtins", "__loader__": "ConstructorFromReduceNode",
            "content": {k: v for k, v in args.items() if k not in ("protocol", "_skops_version")},
            "__id__": 1, "protocol": args["protocol"], "_skops_version": args["_skops_version"]}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("schema.json", json.dumps(node))


def test_a_classifier_file_that_would_run_code_is_refused_and_runs_nothing(run_copy, tmp_path):
    run_dir, data = run_copy
    marker = tmp_path / "code-ran"
    exec_skops(run_dir / "classifier-color.skops", marker)
    assert "builtins.exec" in sio.get_untrusted_types(file=run_dir / "classifier-color.skops")
    with pytest.raises(LabellerError, match=r"classifier-color\.skops: refused to load types .*builtins\.exec"):
        Labeller.load(run_dir)
    result = run(["predict", "--run", str(run_dir), "--data", str(data), "--out", str(tmp_path / "p")], expect=1)
    assert "builtins.exec" in result.output and "Traceback" not in result.output
    assert not marker.exists()


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_every_classifier_clipft_saves_loads_under_the_exact_allowlist(tmp_path, kind):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 6)), np.array(["Red", "Blue", "Black"] * 20, dtype=object)
    classifier = make_classifier(kind, CLASSIFIERS[kind][1][0]).fit(X, y)
    (tmp_path / "c.skops").write_bytes(sio.dumps(classifier))
    loaded = load_classifier(tmp_path / "c.skops")
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))


def _point_classifier_at(run_dir, name):
    manifest = json.loads((run_dir / "labeller.json").read_text())
    manifest["attributes"]["color"]["classifier"]["file"] = name
    (run_dir / "labeller.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["../outside.skops", "ABSOLUTE", "sub/classifier-color.skops", ""])
def test_files_named_outside_the_run_folder_are_refused(run_copy, tmp_path, name):
    run_dir, _ = run_copy
    outside = tmp_path / "outside.skops"
    shutil.copy(run_dir / "classifier-color.skops", outside)
    _point_classifier_at(run_dir, str(outside) if name == "ABSOLUTE" else name)
    with pytest.raises(LabellerError, match="plain names inside its run folder"):
        Labeller.load(run_dir)


def test_a_link_that_leaves_the_run_folder_is_refused(run_copy, tmp_path):
    run_dir, _ = run_copy
    shutil.move(run_dir / "classifier-color.skops", tmp_path / "elsewhere.skops")
    (run_dir / "classifier-color.skops").symlink_to(tmp_path / "elsewhere.skops")
    with pytest.raises(LabellerError, match="link that leaves the run folder"):
        Labeller.load(run_dir)


@pytest.mark.parametrize("name", ["labeller.safetensors", "calibration.npz", "classifier-color.skops"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_run_files_are_one_line_errors_naming_the_file(run_copy, tmp_path, name, damage):
    run_dir, data = run_copy
    path = run_dir / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if damage == "truncated" else b"\x00garbage" * 9)
    result = run(["predict", "--run", str(run_dir), "--data", str(data), "--out", str(tmp_path / "p")], expect=1)
    assert f"{path}: not a readable" in result.output and "damaged" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_the_malicious_file_really_runs_code_when_trusted(tmp_path):
    """The positive control of the refusal test: the same file, loaded with its types trusted, runs."""
    import subprocess
    import sys

    marker = tmp_path / "code-ran"
    exec_skops(tmp_path / "evil.skops", marker)
    code = f"import skops.io as sio; sio.load({str(tmp_path / 'evil.skops')!r}, trusted=['builtins.exec'])"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("manifest", ['["a list"]', '{"format": "clipft-labeller", "version": 1}',
                                      '{"format": "clipft-labeller", "version": 1, "model": "clipft-tiny", '
                                      '"inputs": "image", "attributes": []}'])
def test_a_damaged_manifest_is_one_line(run_copy, manifest):
    run_dir, _ = run_copy
    (run_dir / "labeller.json").write_text(manifest)
    with pytest.raises(LabellerError, match=r"labeller\.json: (not a clipft labeller|no model, inputs, attributes|no attributes object)"):
        Labeller.load(run_dir)


def test_a_run_file_that_is_a_fifo_is_refused_without_reading_it(run_copy):
    import os

    run_dir, _ = run_copy
    (run_dir / "classifier-color.skops").unlink()
    os.mkfifo(run_dir / "classifier-color.skops")
    with pytest.raises(LabellerError, match="missing or not a regular file"):
        Labeller.load(run_dir)
