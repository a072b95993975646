import pytest

from clipft.training.config import ConfigError, FinetuneCfg, load_config, parse_overrides
from conftest import REPO


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: cat.csv\nprompts: [prompts/color.yaml]\nepochs: 4\nlr: 1e-4\n")
    cfg = load_config(path, ["epochs=2", "lock_image=false", "prompts=[a.yaml, b.yaml]", "pretrained="])
    assert cfg.epochs == 2 and cfg.lr == pytest.approx(1e-4) and cfg.lock_image is False
    assert cfg.prompts == ["a.yaml", "b.yaml"] and cfg.pretrained is None
    assert cfg.batch_size == FinetuneCfg.batch_size  # untouched defaults stay


def test_single_prompt_string_becomes_a_list():
    assert load_config(None, ["prompts=prompts/color.yaml"]).prompts == ["prompts/color.yaml"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["epoch=3", "prompts=[a]"], "unknown key 'epoch'"),
        (["epochs=three", "prompts=[a]"], "key 'epochs'"),
        (["captions=words", "prompts=[a]"], "captions"),
        ([], "prompts"),
        (["prompts=[a]", "val_fraction=0.6", "test_fraction=0.5"], "leave rows for training"),
        (["novalue"], "expected key=value"),
    ],
)
def test_bad_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("prompts: [a]\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'learning_rate'"):
        load_config(path)


def test_shipped_configs_load():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert isinstance(load_config(path), FinetuneCfg)


def test_parse_overrides_types():
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=text"]) == {"a": 1, "b": 0.5, "c": True, "d": "text"}
