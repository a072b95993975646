"""Label Studio tasks whose photos show, and answers that come back: how review tasks name their
photos (fast), and the review loop through a real Label Studio server on localhost (slow): predict's
tasks imported, annotated, exported in every format, imported back and fine-tuned on, and
``clipft serve`` connected as the project's ML backend. label-studio lives in a virtual
environment of its own (.ci/run installs it; else the fixture does, once, or skips saying why)."""
import base64
import io
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port, run, tiny_finetune
from PIL import Image

from clipft.commands.sample_data import make_catalogue
from clipft.reporting.review import EMBED_LIMIT, PhotoReferenceError, TaskPhotos

# where .ci/run installs label-studio (the fixture installs it there itself when .ci/run did not)
LS_VENV = Path(os.environ.get("CLIPFT_LABELSTUDIO_VENV", Path.home() / ".cache" / "clipft-test-labelstudio" / "venv"))
LS_REQUIREMENT = "label-studio>=1.23,<2"  # tested with 1.23; .ci/run asks for the same
TOKEN = "0123456789abcdef0123456789abcdef01234567"  # --user-token: 40 hex characters


def test_document_root_paths_are_relative_behind_the_local_files_prefix(tmp_path):
    photo = tmp_path / "shop" / "images" / "a b&c.jpg"
    photos = TaskPhotos(document_root=str(tmp_path))
    assert photos.reference(str(photo)) == "/data/local-files/?d=shop/images/a%20b%26c.jpg"
    assert TaskPhotos("/files/?d=", str(tmp_path)).reference(str(photo)) == "/files/?d=shop/images/a%20b%26c.jpg"
    assert photos.reference("https://cdn.example/p/1.jpg") == "https://cdn.example/p/1.jpg"
    with pytest.raises(PhotoReferenceError, match=r"/elsewhere/x.jpg: photo outside --document-root"):
        TaskPhotos(document_root=str(tmp_path / "shop")).reference("/elsewhere/x.jpg")


def test_embedded_photos_are_small_jpegs_and_only_for_small_queues(tmp_path):
    Image.new("RGB", (640, 320), (200, 30, 30)).save(tmp_path / "big.png")
    uri = TaskPhotos(embed=True).reference(str(tmp_path / "big.png"))
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (256, 128)
    assert TaskPhotos(embed=True).reference("https://cdn.example/1.jpg") == "https://cdn.example/1.jpg"
    assert TaskPhotos("p/", embed=True).for_queue(EMBED_LIMIT + 1) == TaskPhotos("p/")


# ---- a real Label Studio ----

def pip_install(venv: Path) -> None:
    """label-studio in a virtual environment of its own (about 1 GB, minutes): made once, kept."""
    if (venv / ".installed").is_file():
        return
    steps = {"python -m venv": [sys.executable, "-m", "venv", str(venv)],
             "pip install label-studio": [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--retries", "1",
                                          "--timeout", "20", LS_REQUIREMENT]}
    for what, step in steps.items():
        done = subprocess.run(step, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:]
            pytest.skip(f"label-studio could not be installed into {venv} ({what}: {' '.join(last)})")
    (venv / ".installed").touch()


def call(server, path, body=None, method=None, raw=False):
    """One REST call with the test user's token: the parsed JSON answer (``raw``: status, type, bytes)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server["url"] + path, data=data, method=method or ("POST" if data else "GET"),
                                     headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            content = answer.read()
    except urllib.error.HTTPError as err:
        pytest.fail(f"{request.method} {path}: {err.code} {err.read()[:1000]!r}")
    return (answer.status, answer.headers.get("Content-Type"), content) if raw else json.loads(content or "null")


def wait_for(url: str, process, log: Path, seconds: int = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"label-studio stopped ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"label-studio did not answer {url}/api/version in {seconds} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A Label Studio server on 127.0.0.1 serving local files under a fresh document root."""
    pip_install(LS_VENV)
    home, root = tmp_path_factory.mktemp("ls-home"), tmp_path_factory.mktemp("ls-root")
    port = free_port()
    env = {**os.environ, "HOME": str(home), "LABEL_STUDIO_BASE_DATA_DIR": str(home / "data"),
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root),
           # an ML backend on 127.0.0.1 (and the webhook Label Studio adds for it) is refused without these
           "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"}
    log = home / "label-studio.log"
    command = [str(LS_VENV / "bin" / "label-studio"), "start", "--internal-host", "127.0.0.1",
               "--port", str(port), "--no-browser", "--username", "test@clipft.invalid",
               "--password", secrets.token_hex(8), "--user-token", TOKEN, "--enable-legacy-api-token"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home)
    try:
        wait_for(f"http://127.0.0.1:{port}", process, log)
        yield {"url": f"http://127.0.0.1:{port}", "root": root}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def listed_tasks(server, project: int) -> list[dict]:
    answer = call(server, f"/api/tasks?project={project}&fields=all&page_size=1000")
    return answer["tasks"] if isinstance(answer, dict) else answer


def questions(config: Path) -> dict[str, frozenset[str]]:
    """The labelling config's questions (catalogue columns) and the classes each offers."""
    from clipft.commands.import_labels import labelling_config

    return labelling_config(config)[0]


def another_class(config: Path, column: str, predicted: str) -> str:
    return min(questions(config)[column] - {predicted})


def review_queue(server, tmp_path) -> tuple[Path, Path, Path]:
    """A tiny run's review queue of a catalogue under the document root (named by absolute
    paths), the catalogue without its label columns, as predict gets it, and the run."""
    catalogue = make_catalogue(server["root"] / "shop", n=12, size=32, seed=0)
    run_dir = tiny_finetune(catalogue, tmp_path / "ft", tmp_path / "cache")
    new = server["root"] / "shop" / "new_products.csv"
    pd.read_csv(catalogue, dtype=str).drop(columns=["baseColour", "lid"]).to_csv(new, index=False)
    run(["predict", "--run", str(run_dir), "--data", str(new.resolve()), "--out", str(tmp_path / "p"),
         "--cache-dir", str(tmp_path / "cache"), "--target-precision", "1", "--document-root", str(server["root"])])
    return tmp_path / "p", new, run_dir


def photo_options_elsewhere(run_dir: Path, new: Path, tmp_path: Path) -> None:
    """Photos outside --document-root are one error naming one; embedded photos need no root."""
    options = ["predict", "--run", str(run_dir), "--data", str(new), "--cache-dir", str(tmp_path / "cache"),
               "--target-precision", "1"]
    result = run([*options, "--out", str(tmp_path / "p2"), "--document-root", str(tmp_path)], expect=1)
    assert "photo outside --document-root" in result.output and len(result.output.strip().splitlines()) == 1
    assert str(new.parent / "images") in result.output and not (tmp_path / "p2" / "predictions.csv").exists()
    run([*options, "--out", str(tmp_path / "p3"), "--embed-photos"])
    tasks = json.loads((tmp_path / "p3" / "review_labelstudio.json").read_text())
    assert tasks and all(t["data"]["image"].startswith("data:image/jpeg;base64,") for t in tasks)


def answer_every_task(server, imported: list[dict], config: Path, truth: pd.DataFrame) -> dict:
    """Annotations for every task: the first three disagree with the model's pre-annotation (so
    only the answers, not the predictions, can come back), the rest give the catalogue's label."""
    answers = {}
    for i, task in enumerate(imported):
        product = task["data"]["clipft_id"]
        if i < 3 and task.get("predictions"):
            chosen = {r["from_name"]: another_class(config, r["from_name"], r["value"]["choices"][0])
                      for r in task["predictions"][0]["result"]}
        else:
            chosen = truth.loc[product, ["baseColour", "lid"]].dropna().to_dict()
        results = [{"from_name": column, "to_name": "image", "type": "choices", "value": {"choices": [value]}}
                   for column, value in chosen.items()]
        call(server, f"/api/tasks/{task['id']}/annotations", {"result": results})
        answers |= {(product, column): value for column, value in chosen.items()}
    return answers


def export_and_import(server, project: int, predicted: Path, new: Path, tmp_path: Path) -> list[str]:
    """Each export format through import-labels: the corrected catalogues, as text."""
    corrected = []
    for kind in ("JSON", "JSON_MIN", "CSV"):
        _, _, content = call(server, f"/api/projects/{project}/export?exportType={kind}", raw=True)
        export = tmp_path / f"export_{kind}.{'csv' if kind == 'CSV' else 'json'}"
        export.write_bytes(content)
        out = tmp_path / f"corrected_{kind}" / "corrected.csv"
        run(["import-labels", "--labelstudio", str(export), "--data", str(new), "--out", str(out),
             "--config", str(predicted / "labelstudio_config.xml")])
        corrected.append(out.read_text())
    return corrected


def corrected_catalogue_fine_tunes(corrected: Path, config: Path, run_dir: Path, tmp_path: Path) -> None:
    """The catalogue import-labels wrote, re-trained on as the README says (the run's own config,
    the corrected data): a run that labels photos with the interface's classes."""
    from clipft.labeller import Labeller

    out = tmp_path / "ft-corrected"
    run(["finetune", "--config", str(run_dir / "config.yaml"), "--set", f"data={corrected}", "--out", str(out),
         "--quiet"])
    labeller = Labeller.load(out)
    assert set(labeller.heads) == {"color", "lid"}
    photo = Image.open(corrected.parent / pd.read_csv(corrected, dtype=str)["image"][0])
    assert labeller.predict([photo])["color"][0] in questions(config)["baseColour"]


def backend_predictions(server, project: int, backend_url: str, tasks: list[dict]) -> list[list[dict]]:
    """Connect the backend to the project, import tasks without predictions and get Label Studio
    to ask the backend for them: the first by opening it (as the labelling page does), the others
    by the data manager's "Retrieve Predictions" action. Each task's predictions, in order."""
    call(server, "/api/ml", {"url": backend_url, "project": project, "title": "clipft"})
    call(server, f"/api/projects/{project}/import", tasks)
    ids = {t["data"]["clipft_id"]: t["id"] for t in listed_tasks(server, project)}
    new = [ids[t["data"]["clipft_id"]] for t in tasks]
    assert not any(call(server, f"/api/predictions?task={i}") for i in new)
    call(server, f"/api/tasks/{new[0]}")
    call(server, f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
         {"selectedItems": {"all": False, "included": new[1:]}})
    return [call(server, f"/api/predictions?task={i}") for i in new]


def backend_prelabels_new_tasks(server, project: int, start_backend, run_dir: Path, config: Path) -> None:
    """clipft serve as the project's ML backend: tasks imported without predictions get clipft's
    classes and scores, exactly what the backend itself answers for their photos."""
    url, backend = start_backend(run_dir, server["root"], run_dir.parent / "cache")
    photos = sorted(t["data"]["image"] for t in listed_tasks(server, project))[:2]  # served local files
    tasks = [{"data": {"image": photo, "clipft_id": f"new-{i}", "title": "a product nobody labelled"}}
             for i, photo in enumerate(photos)]
    offered = questions(config)
    for task, predictions in zip(tasks, backend_predictions(server, project, url, tasks)):
        assert len(predictions) == 1 and predictions[0]["model_version"] == str(run_dir)
        results = predictions[0]["result"]
        assert results and all(r["value"]["choices"][0] in offered[r["from_name"]] and 0 < r["score"] <= 1
                               for r in results)
        expected = backend.task_prediction(task, 0)
        assert results == expected["result"] and predictions[0]["score"] == pytest.approx(expected["score"])


@pytest.fixture
def clipft_backend():
    """``clipft serve`` for a run, on a free loopback port: start(run, document_root, cache) -> (url, backend)."""
    from clipft.commands.serve import load_backend, make_server

    servers = []

    def start(run_dir, root, cache):
        httpd = make_server(load_backend(run_dir, "cpu", str(cache), root), "127.0.0.1", 0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", httpd.backend

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
@pytest.mark.labelstudio
def test_tasks_open_in_label_studio_and_every_export_comes_back(label_studio, clipft_backend, tmp_path):
    predicted, new, run_dir = review_queue(label_studio, tmp_path)
    config = predicted / "labelstudio_config.xml"
    project = call(label_studio, "/api/projects", {"title": "clipft review", "label_config": config.read_text()})["id"]
    call(label_studio, "/api/storages/localfiles", {"project": project, "path": str(new.parent),  # under the root
                                                    "title": "photos", "use_blob_urls": False})
    tasks = json.loads((predicted / "review_labelstudio.json").read_text())
    assert len(tasks) >= 3
    call(label_studio, f"/api/projects/{project}/import", tasks)
    imported = listed_tasks(label_studio, project)
    assert len(imported) == len(tasks)
    for task in imported:  # every photo answers through Label Studio
        status, kind, content = call(label_studio, task["data"]["image"], raw=True)
        assert status == 200 and kind.startswith("image/") and Image.open(io.BytesIO(content)).size == (32, 32)
    truth = pd.read_csv(new.parent / "catalogue.csv", dtype=str).set_index("id")
    answers = answer_every_task(label_studio, imported, config, truth)
    corrected = export_and_import(label_studio, project, predicted, new, tmp_path)
    assert corrected[0] == corrected[1] == corrected[2]
    frame = pd.read_csv(tmp_path / "corrected_JSON" / "corrected.csv", dtype=str).set_index("id")
    assert {key: frame.at[key] for key in answers} == answers
    assert all((tmp_path / "corrected_JSON" / image).is_file() for image in frame["image"])
    corrected_catalogue_fine_tunes(tmp_path / "corrected_JSON" / "corrected.csv", config, run_dir, tmp_path)
    photo_options_elsewhere(run_dir, new, tmp_path)
    backend_prelabels_new_tasks(label_studio, project, clipft_backend, run_dir, config)
