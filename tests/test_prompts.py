import pytest
import yaml

from clipft.prompts import PromptFileError, load_prompt_spec, load_prompt_specs, parse_prompt_spec
from conftest import REPO

VALID = {
    "attribute": "color",
    "column": "baseColour",
    "templates": ["a photo of a {} product", "{}"],
    "classes": {"Black": None, "Navy Blue": ["navy blue", "dark blue"]},
}


def write(tmp_path, data, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_parse_valid_file_keeps_class_values_and_builds_prompts(tmp_path):
    spec = load_prompt_spec(write(tmp_path, VALID))
    assert spec.classes == ("Black", "Navy Blue")
    assert spec.prompts_for("Black") == ["a photo of a Black product", "Black"]
    assert spec.prompts_for("Navy Blue") == [
        "a photo of a navy blue product", "a photo of a dark blue product", "navy blue", "dark blue",
    ]


def test_classes_may_be_a_plain_list():
    spec = parse_prompt_spec({**VALID, "classes": ["Men", "Women"]})
    assert spec.classes == ("Men", "Women")
    assert spec.prompts_for("Men") == ["a photo of a Men product", "Men"]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"column": None}, "column"),
        ({"classes": {}}, "classes"),
        ({"classes": []}, "classes"),
        ({"templates": ["a photo of a product"]}, "templates[0]"),
        ({"templates": []}, "templates"),
        ({"templates": ["{} and {}"]}, "templates[0]"),
        ({"colour": "x"}, "colour"),
        ({"classes": {"Navy Blue": [""]}}, "classes.Navy Blue"),
        ({"classes": {True: None}}, "classes"),
    ],
)
def test_malformed_file_error_names_file_and_key(tmp_path, change, key):
    data = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    path = write(tmp_path, data)
    with pytest.raises(PromptFileError) as err:
        load_prompt_spec(path)
    assert str(path) in str(err.value)
    assert f"'{key}'" in str(err.value)


def test_missing_key_is_named(tmp_path):
    data = {k: v for k, v in VALID.items() if k != "templates"}
    with pytest.raises(PromptFileError, match=r"p\.yaml: key 'templates': missing"):
        load_prompt_spec(write(tmp_path, data))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(PromptFileError, match="absent.yaml: no such file, and not a shipped prompts name"):
        load_prompt_spec(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("attribute: [unclosed")
    with pytest.raises(PromptFileError, match="bad.yaml: not valid YAML"):
        load_prompt_spec(bad)


def test_duplicate_attribute_names_are_refused(tmp_path):
    a = write(tmp_path, VALID, "a.yaml")
    b = write(tmp_path, VALID, "b.yaml")
    with pytest.raises(PromptFileError, match="also defined in"):
        load_prompt_specs([a, b])


@pytest.mark.parametrize("path", sorted((REPO / "prompts").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_prompt_files_are_valid(path):
    spec = load_prompt_spec(path)
    assert len(spec.classes) >= 2
    assert all(spec.prompts_for(c) for c in spec.classes)


def test_shipped_fashion_prompt_sizes():
    assert len(load_prompt_spec(REPO / "prompts" / "category.yaml").classes) == 20
    assert len(load_prompt_spec(REPO / "prompts" / "color.yaml").classes) == 15
