"""clipft serve: a run answers Label Studio's ML backend protocol on a loopback port."""
import base64
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from conftest import run, tiny_finetune
from PIL import Image

KIND = "attribute: kind\ncolumn: articleType\ntemplates: ['{}']\nclasses: [Tshirts, Mugs, Pans]\n"


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    """A tiny run labelling the kind of product and whether it has a lid (a lid applies to mugs and pans only)."""
    from clipft.commands.sample_data import make_catalogue

    folder = tmp_path_factory.mktemp("serve")
    data = make_catalogue(folder / "cat", n=24, size=32, seed=3)
    (folder / "kind.yaml").write_text(KIND)
    run_dir = tiny_finetune(data, folder / "ft", folder / "cache", f"[{folder / 'kind.yaml'}, lid]")
    return run_dir, data.parent, folder / "cache"


@pytest.fixture
def server(served_run, request):
    from clipft.commands.serve import load_backend, make_server

    run_dir, root, cache = served_run
    token = getattr(request, "param", None)
    httpd = make_server(load_backend(run_dir, "cpu", str(cache), root), "127.0.0.1", 0, token)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.backend
    httpd.shutdown()
    httpd.server_close()


def call(url, body=None, headers=None, raw=None):
    """(status, parsed JSON answer, raw answer) of a GET (no body) or POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            text = answer.read()
            return answer.status, json.loads(text), text
    except urllib.error.HTTPError as err:
        text = err.read()
        return err.code, json.loads(text), text


def test_health_setup_and_predict_in_the_protocols_shapes(server, served_run):
    from clipft.labeller import Labeller

    url, _ = server
    run_dir, root, _ = served_run
    assert call(url + "/health")[:2] == (200, {"status": "UP", "model_class": "clipft", "model_version": str(run_dir)})
    status, setup, _ = call(url + "/setup", {"project": "1.1700000000", "schema": "<View/>", "hostname": "x"})
    assert status == 200 and setup == {"model_version": str(run_dir)}
    frame = pd.read_csv(root / "catalogue.csv", dtype=str)
    tasks = [{"id": 1, "data": {"image": "/data/local-files/?d=" + frame["image"][0]}},
             {"id": 2, "data": {"image": frame["image"][1], "title": frame["title"][1]}},
             {"id": 3, "data": {"image": str(root / frame["image"][2])}}]
    status, answer, _ = call(url + "/predict", {"tasks": tasks, "label_config": "<View/>", "project": "1.1", "params": {}})
    assert status == 200 and len(answer["results"]) == 3
    labeller = Labeller.load(run_dir)
    photos = [Image.open(root / frame["image"][i]) for i in range(3)]
    expected = labeller.predict(photos)
    for i, prediction in enumerate(answer["results"]):
        choices = {r["from_name"]: r["value"]["choices"][0] for r in prediction["result"]}
        assert all(r["to_name"] == "image" and r["type"] == "choices" and 0 < r["score"] <= 1
                   for r in prediction["result"])
        assert prediction["model_version"] == str(run_dir)
        assert prediction["score"] == min(r["score"] for r in prediction["result"])
        assert choices["articleType"] == expected["kind"][i]
        if choices["articleType"] == "Tshirts":  # a lid does not apply: not asked
            assert "lid" not in choices
        else:
            assert choices["lid"] == expected["lid"][i]


def test_na_attribute_left_out(server, served_run):
    """A product the labeller takes for a t-shirt gets no lid question, one it takes for a mug does."""
    import dataclasses

    url, backend = server
    _, root, _ = served_run
    frame = pd.read_csv(root / "catalogue.csv", dtype=str)
    original = backend.labeller
    asked = {}
    for kind, prior in (("Tshirts", [1e4, 0.0, 0.0]), ("Mugs", [0.0, 1e4, 0.0])):
        head = dataclasses.replace(original.heads["kind"], log_prior=np.array(prior))  # the kind, forced
        backend.labeller = original._with_heads({**original.heads, "kind": head})
        status, answer, _ = call(url + "/predict", {"tasks": [{"data": {"image": frame["image"][0]}}]})
        assert status == 200
        asked[kind] = {r["from_name"]: r["value"]["choices"][0] for r in answer["results"][0]["result"]}
    backend.labeller = original
    assert asked["Tshirts"] == {"articleType": "Tshirts"}
    assert asked["Mugs"]["articleType"] == "Mugs" and "lid" in asked["Mugs"]


@pytest.mark.parametrize("body, message", [
    (b"not json", "not JSON"), (b"[1, 2]", "JSON object"), (json.dumps({"tasks": 3}).encode(), "no list 'tasks'"),
    (json.dumps({"tasks": [{"data": {}}]}).encode(), "task 0 has no data.image"),
    (json.dumps({"tasks": [{"data": {"image": "images/none.jpg"}}]}).encode(), "no such file"),
    (json.dumps({"tasks": [{"data": {"image": "/data/local-files/?d=../../etc/passwd"}}]}).encode(), "outside"),
    (json.dumps({"tasks": [{"data": {"image": "data:image/png;base64,AAAA"}}]}).encode(), "not an image"),
])
def test_bad_request_is_400_with_one_line(server, body, message):
    url, _ = server
    status, answer, raw = call(url + "/predict", raw=body)
    assert status == 400 and message in answer["error"]
    assert b"\n" not in raw and "Traceback" not in answer["error"]


def test_embedded_photo_is_read(server, served_run):
    url, _ = server
    _, root, _ = served_run
    image = min((root / "images").iterdir()).read_bytes()
    uri = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    status, answer, _ = call(url + "/predict", {"tasks": [{"data": {"image": uri}}]})
    assert status == 200 and answer["results"][0]["result"]


@pytest.mark.parametrize("server", ["s3cret"], indirect=True)
def test_token_enforced(server):
    url, _ = server
    assert call(url + "/health")[0] == 401
    assert call(url + "/health", headers={"Authorization": "Token wrong"})[0] == 401
    assert call(url + "/health", headers={"Authorization": "Token s3cret"})[0] == 200
    basic = base64.b64encode(b"labelstudio:s3cret").decode()  # what Label Studio's basic auth sends
    assert call(url + "/health", headers={"Authorization": f"Basic {basic}"})[0] == 200
    assert call(url + "/setup", {"project": "1"}, headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_non_loopback_without_token_refused_at_start(served_run, monkeypatch):
    monkeypatch.delenv("CLIPFT_SERVE_TOKEN", raising=False)
    result = run(["serve", "--run", str(served_run[0]), "--host", "0.0.0.0"], expect=1)
    assert "needs a token" in result.output and "Traceback" not in result.output


def test_webhook_and_unknown_routes(server):
    url, _ = server
    assert call(url + "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 1}}) [:2] == (
        200, {"status": "ok", "result": "ANNOTATION_CREATED noted; clipft serve does not train (re-train with clipft "
                                        "finetune)"})
    assert call(url + "/nowhere")[0] == 404
