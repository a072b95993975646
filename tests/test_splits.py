import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipft.catalogue import CatalogueError, load_catalogue
from clipft.training.splits import assign_groups, column_splits, near_duplicate_pairs, split_rows


def catalogue(tmp_path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "x.jpg")
    frame = pd.DataFrame({
        "id": [str(i) for i in range(n)],
        "image": "images/x.jpg",
        "colour": rng.choice(["Red", "Blue", "Green", "Black"], size=n, p=[0.55, 0.25, 0.15, 0.05]),
        "title": [f"product {i // 3}" if i < 60 else f"unique {i}" for i in range(n)],  # titles shared in threes
        "family": [f"f{i // 5}" for i in range(n)],
    })
    frame.to_csv(tmp_path / "c.csv", index=False)
    return load_catalogue(tmp_path / "c.csv")


def test_splits_keep_groups_together_and_are_stratified(tmp_path):
    cat = catalogue(tmp_path)
    groups = assign_groups(cat, "family")
    split = split_rows(cat.frame["colour"], groups, 0.15, 0.15, seed=0)
    frame = pd.DataFrame({"group": groups, "split": split, "colour": cat.frame["colour"]})
    assert (frame.groupby("group")["split"].nunique() == 1).all()  # no group straddles two splits
    share = frame["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.08)
    assert share["test"] == pytest.approx(0.15, abs=0.06) and share["val"] == pytest.approx(0.15, abs=0.06)
    red = frame[frame.colour == "Red"]["split"].value_counts(normalize=True)
    assert red["train"] == pytest.approx(share["train"], abs=0.1)  # stratified: classes keep their proportions


def test_splits_are_reproducible_from_the_seed(tmp_path):
    cat = catalogue(tmp_path)
    groups = assign_groups(cat)
    a = split_rows(cat.frame["colour"], groups, 0.2, 0.2, seed=3)
    assert (a == split_rows(cat.frame["colour"], groups, 0.2, 0.2, seed=3)).all()
    assert (a != split_rows(cat.frame["colour"], groups, 0.2, 0.2, seed=4)).any()


def test_shared_titles_and_near_duplicate_photos_join_groups(tmp_path):
    cat = catalogue(tmp_path, n=70)
    groups = assign_groups(cat)
    assert groups[0] == groups[1] == groups[2] != groups[3]  # "product 0" three times
    features = np.random.default_rng(0).normal(size=(70, 16)).astype(np.float32) + 5.0  # a shared component
    features[66] = features[65] + 0.01  # a near-identical photo
    joined = assign_groups(cat, features=features, duplicate_threshold=0.95)
    assert joined[65] == joined[66] and groups[65] != groups[66]
    assert len(np.unique(joined)) == len(np.unique(groups)) - 1  # the shared component joins nothing else
    assert list(near_duplicate_pairs(features, 0.95)) == [(65, 66)]


def test_groups_file(tmp_path):
    cat = catalogue(tmp_path, n=70)
    pd.DataFrame({"id": ["65", "69"], "group": ["g", "g"]}).to_csv(tmp_path / "groups.csv", index=False)
    groups = assign_groups(cat, str(tmp_path / "groups.csv"))
    assert groups[65] == groups[69] != groups[66]
    with pytest.raises(CatalogueError, match="neither a column"):
        assign_groups(cat, str(tmp_path / "nope.csv"))


def test_split_column(tmp_path):
    cat = catalogue(tmp_path, n=4)
    cat.frame["part"] = ["train", "Validation", "test", "train"]
    assert column_splits(cat, "part").tolist() == ["train", "val", "test", "train"]
    cat.frame.loc[3, "part"] = "holdout"
    with pytest.raises(CatalogueError, match="line 5: split column 'part' has 'holdout'"):
        column_splits(cat, "part")


def test_splits_from_an_earlier_run(tmp_path):
    from clipft.training.splits import splits_from_file

    cat = catalogue(tmp_path, n=3)
    pd.DataFrame({"id": ["0", "1", "2"], "split": ["test", "train", "val"]}).to_csv(tmp_path / "s.csv", index=False)
    assert splits_from_file(cat, str(tmp_path / "s.csv")).tolist() == ["test", "train", "val"]
    pd.DataFrame({"id": ["0"], "split": ["test"]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(CatalogueError, match="2 product"):
        splits_from_file(cat, str(tmp_path / "short.csv"))
