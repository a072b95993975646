import pytest
import yaml

from clipft.training.config import (ConfigError, FinetuneCfg, OptimCfg, SplitCfg, TaskCfg, build_config, config_dict,
                                    flat_config, load_config, parse_overrides)
from conftest import REPO


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: cat.csv\nprompts: [prompts/color.yaml]\nepochs: 4\nlr: 1e-4\n")
    cfg = load_config(path, ["epochs=2", "lock_image=false", "prompts=[a.yaml, b.yaml]", "pretrained="])
    assert cfg.optim.epochs == 2 and cfg.optim.lr == pytest.approx(1e-4) and cfg.towers.lock_image is False
    assert cfg.catalogue.prompts == ["a.yaml", "b.yaml"] and cfg.towers.pretrained is None
    assert cfg.optim.batch_size == OptimCfg.batch_size  # untouched defaults stay


def test_sections_in_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("catalogue:\n  data: cat.csv\n  prompts: [color]\noptim: {epochs: 4, lr: 1e-4}\nseed: 3\n")
    cfg = load_config(path, ["optim.batch_size=8", "split.shots=2", "epochs=5"])
    assert (cfg.catalogue.data, cfg.catalogue.prompts, cfg.runtime.seed) == ("cat.csv", ["color"], 3)
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.optim.batch_size, cfg.split.shots) == (5, pytest.approx(1e-4), 8, 2)
    assert load_config(None, ["prompts=[a]", "optim={epochs: 7}"]).optim.epochs == 7


def test_single_prompt_string_becomes_a_list():
    assert load_config(None, ["prompts=prompts/color.yaml"]).catalogue.prompts == ["prompts/color.yaml"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["epoch=3", "prompts=[a]"], "unknown key 'epoch'"),
        (["epochs=three", "prompts=[a]"], "key 'epochs'"),
        (["captions=words", "prompts=[a]"], "captions"),
        ([], "prompts"),
        (["prompts=[a]", "val_fraction=0.6", "test_fraction=0.5"], "leave rows for training"),
        (["novalue"], "expected key=value"),
        (["prompts=[a]", "split.epochs=3"], r"unknown key 'split.epochs' \(epochs belongs to optim: optim.epochs\)"),
        (["prompts=[a]", "optim.epoch=3"], "unknown key 'optim.epoch'"),
        (["prompts=[a]", "optim=3"], "key 'optim': expected a mapping of optim settings"),
        (["prompts=[a]", "optim.lr=-1"], "lr: must be a positive number"),
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
    path.write_text("prompts: [a]\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'optim.learning_rate'"):
        load_config(path)


def test_each_section_checks_its_own_fields():
    with pytest.raises(ConfigError, match="epochs: must be at least 1"):
        OptimCfg(epochs=0)
    with pytest.raises(ConfigError, match="shots: must be at least 1"):
        SplitCfg(shots=0)
    with pytest.raises(ConfigError, match="captions=title"):
        TaskCfg(captions="title", inputs="fusion")
    assert TaskCfg(captions="title").inputs is None and FinetuneCfg(task=TaskCfg(captions="title")).catalogue.prompts == []


def test_saved_configs_load_back_nested_and_flat(tmp_path):
    cfg = build_config({"data": str(tmp_path / "cat.csv"), "prompts": ["color"], "optim": {"epochs": 3},
                        "title_dropout": 0.25, "wise_alphas": [1.0]})
    nested, flat = tmp_path / "config.yaml", tmp_path / "old_config.yaml"
    nested.write_text(yaml.safe_dump(config_dict(cfg), sort_keys=False))  # as a run folder holds it
    flat.write_text(yaml.safe_dump(flat_config(cfg), sort_keys=False))  # as runs before sections held it
    assert "optim:" in nested.read_text() and "optim:" not in flat.read_text()
    assert load_config(nested) == cfg and load_config(flat) == cfg


def test_shipped_and_benchmark_configs_load():
    paths = [*(REPO / "clipft" / "resources" / "configs").glob("*.yaml"), *(REPO / "benchmarks" / "configs").glob("*.yaml")]
    assert paths
    for path in paths:
        assert isinstance(load_config(path), FinetuneCfg)


def test_parse_overrides_types():
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=text"]) == {"a": 1, "b": 0.5, "c": True, "d": "text"}
