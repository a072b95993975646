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


LONG = " ".join(["plain"] * 20)  # 20 tokens: more than the tiny model's 16-token context


def test_a_template_that_leaves_no_room_for_the_class_text_is_refused(tmp_path, tiny_model):
    from clipft.prompts import check_prompt_lengths

    spec = load_prompt_spec(write(tmp_path, {**VALID, "templates": [f"a photo of a {LONG} {{}}", "{}"]}))
    with pytest.raises(PromptFileError) as err:
        check_prompt_lengths(spec, tiny_model[2])
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "p.yaml") in message
    assert "leaves no room for the class text within the text tower's 16 tokens" in message and "'Black'" in message


def test_classes_whose_cut_prompts_are_identical_are_refused(tmp_path, tiny_model):
    from clipft.prompts import check_prompt_lengths

    # the synonyms differ only in their last word, which the cut takes away (the file lists Blue first)
    classes = {"Red": [f"{LONG} red"], "Blue": [f"{LONG} blue"]}
    spec = load_prompt_spec(write(tmp_path, {**VALID, "templates": ["{}"], "classes": classes}))
    with pytest.raises(PromptFileError, match=r"p\.yaml: classes 'Blue' and 'Red' of color get identical prompts "
                                              r"once cut to the text tower's 16 tokens"):
        check_prompt_lengths(spec, tiny_model[2])


def test_cut_prompts_that_keep_their_class_text_are_warned_about_once(tmp_path, tiny_model, caplog):
    from clipft.prompts import check_prompt_lengths

    spec = load_prompt_spec(write(tmp_path, {**VALID, "templates": [f"{{}} {LONG}", "{}"]}))
    with caplog.at_level("WARNING", logger="clipft.prompts"):
        check_prompt_lengths(spec, tiny_model[2])
        check_prompt_lengths(spec, tiny_model[2])  # a second chunk or epoch: said once
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    # "Black": 1 + 20 words + start and end = 23 tokens, 7 cut; "navy blue": 24, 8 cut
    assert str(tmp_path / "p.yaml") in warnings[0] and "3 prompt(s) of color are longer than the text tower's 16" in warnings[0]
    assert "'Black' (up to 7 tokens cut), 'Navy Blue' (up to 8 tokens cut)" in warnings[0]


def test_prompts_that_fit_are_not_warned_about(tmp_path, tiny_model, caplog):
    from clipft.prompts import check_prompt_lengths

    with caplog.at_level("WARNING", logger="clipft.prompts"):
        check_prompt_lengths(load_prompt_spec(write(tmp_path, VALID)), tiny_model[2])
    assert not caplog.records


def test_prompts_of_few_characters_but_many_tokens_are_counted_by_bytes(tiny_model):
    from clipft.prompts import token_lengths

    emoji = "👕" * 10  # 10 characters, 40 UTF-8 bytes, each byte its own token or more
    [n] = token_lengths(tiny_model[2], [emoji])
    full = tiny_model[2]([emoji], context_length=200)[0].tolist()
    assert n == sum(1 for t in full if t != 0) and n > len(emoji) + 8
