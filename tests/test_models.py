import open_clip
import pytest
import torch

from clipft.models import ModelLoadError, TINY_MODEL, default_pretrained, load_model, tower_fingerprint


def test_tiny_model_encodes_images_and_text(tiny_model):
    model, preprocess, tokenizer = tiny_model
    assert preprocess.transforms[0].size == 32
    with torch.no_grad():
        image = model.encode_image(torch.zeros(2, 3, 32, 32))
        text = model.encode_text(tokenizer(["a red shirt", "a mug"]))
    assert image.shape == (2, 32) and text.shape == (2, 32)


def test_default_pretrained():
    assert default_pretrained("ViT-B-32") == "laion2b_s34b_b79k"
    assert default_pretrained(TINY_MODEL) is None
    assert default_pretrained("lite0-minilm") is None


def test_fingerprint_follows_the_weights_of_each_tower():
    torch.manual_seed(0)
    a, _, _ = load_model(TINY_MODEL)
    torch.manual_seed(0)
    b, _, _ = load_model(TINY_MODEL)
    assert tower_fingerprint(a, "image") == tower_fingerprint(b, "image")
    with torch.no_grad():
        b.text_projection.add_(1.0)
    assert tower_fingerprint(a, "image") == tower_fingerprint(b, "image")
    assert tower_fingerprint(a, "text") != tower_fingerprint(b, "text")
    with torch.no_grad():
        b.visual.proj.add_(1.0)
    assert tower_fingerprint(a, "image") != tower_fingerprint(b, "image")
    with pytest.raises(ValueError):
        tower_fingerprint(a, "audio")


def test_checkpoint_file_loads_as_pretrained(tmp_path, tiny_model):
    model = tiny_model[0]
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded, _, _ = load_model(TINY_MODEL, str(path))
    assert tower_fingerprint(loaded, "image") == tower_fingerprint(model, "image")
    assert tower_fingerprint(loaded, "text") == tower_fingerprint(model, "text")


def test_bad_names_and_paths_get_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not a known architecture"):
        load_model("ViT-Z-99")
    with pytest.raises(ModelLoadError, match="neither a file nor a known tag.*laion2b_s34b_b79k"):
        load_model("ViT-B-32", "no_such_tag")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(TINY_MODEL, str(tmp_path / "missing.pt"))


def test_failed_download_suggests_the_offline_model(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download file: Name or service not known")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(ModelLoadError) as err:
        load_model("RN50", "openai")
    assert "Could not download the OpenCLIP weights RN50/openai" in str(err.value)
    assert "--model lite0-minilm" in str(err.value)


def test_clipft_configs_are_added_to_openclip_once(monkeypatch):
    """Every model load asks for the registry; OpenCLIP rescans the folder only the first time
    (a rescan would also bring back the 'clipft' sections popped before building a model)."""
    import open_clip

    from clipft.model_registry import register_model_configs
    from clipft.models import list_models

    register_model_configs()
    calls = []
    monkeypatch.setattr(open_clip, "add_model_config", lambda path: calls.append(path))
    register_model_configs()
    list_models()
    assert calls == []
