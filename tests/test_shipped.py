"""The configs that ship inside the package work after ``pip install``: they name no file
outside it (the catalogue and its prompts are the user's, given with ``--set``), and each is
the recipe a benchmark measured, less the benchmark's data."""
import dataclasses

import pandas as pd
import pytest
import yaml

from clipft.shipped import resolve, shipped_dir, shipped_names
from clipft.training.config import load_config
from conftest import REPO, run

SHIPPED = shipped_names("configs")
# shipped recipe -> the benchmark recipe that measured it on the fashion catalogue
MEASURED = {"align-lite0-minilm": "align-fashion", "curve": "curve-fashion", "photos": "photos-fashion",
            "titles": "titles-fashion"}
# what a benchmark recipe adds: where its catalogue, groups, split and starting weights are
DATA_KEYS = ("data", "groups", "splits_from", "pretrained")


def settings(cfg) -> dict:
    """A config's settings by flat key (``data``, ``epochs``), as the recipes write them."""
    return {key: value for section in dataclasses.asdict(cfg).values() for key, value in section.items()}


def values(node):
    """Every scalar of a parsed YAML file, however nested."""
    if isinstance(node, dict):
        return [v for item in node.values() for v in values(item)]
    if isinstance(node, list):
        return [v for item in node for v in values(item)]
    return [node]


def test_the_shipped_configs_are_the_generic_recipes():
    assert set(SHIPPED) == set(MEASURED)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_config_loads_and_names_no_file_outside_the_package(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing here for a name to resolve to
    raw = yaml.safe_load((shipped_dir("configs") / f"{name}.yaml").read_text())
    strings = [v for v in values(raw) if isinstance(v, str)]
    assert not [s for s in strings if "../" in s or "runs/" in s or s.endswith((".csv", ".pt"))], strings
    assert not set(raw) & set(DATA_KEYS)
    cfg = settings(load_config(name))
    assert cfg["data"] == "" and cfg["pretrained"] is None and cfg["splits_from"] is None
    assert all(str(resolve(p, "prompts")).startswith(str(shipped_dir("prompts"))) for p in cfg["prompts"])


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_config_is_its_benchmark_recipe_without_the_data(name, monkeypatch):
    monkeypatch.chdir(REPO)  # the benchmark recipes name paths from the repository root
    shipped = settings(load_config(name))
    measured = settings(load_config(REPO / "benchmarks" / "configs" / f"{MEASURED[name]}.yaml"))
    for key in DATA_KEYS:
        shipped.pop(key), measured.pop(key)
    assert shipped == measured


@pytest.mark.parametrize("name", ["photos", "titles"])
def test_a_shipped_config_trains_on_the_users_catalogue(name, tmp_path, sample_catalogue):
    run(["finetune", "--config", name, "--set", f"data={sample_catalogue}", "--set", "prompts=[color, lid]",
         "--set", "model=clipft-tiny", "--set", "epochs=1", "--set", "batch_size=8",
         "--set", f"cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "run"), "--quiet"])
    saved = settings(load_config(tmp_path / "run" / "config.yaml"))
    assert saved["data"] == str(sample_catalogue) and saved["prompts"] == ["color", "lid"]
    assert saved["inputs"] == settings(load_config(name))["inputs"]
    comparison = pd.read_csv(tmp_path / "run" / "comparison.csv")
    assert {"color", "lid"} <= set(comparison["attribute"]) and "fine-tuned" in set(comparison["model"])
