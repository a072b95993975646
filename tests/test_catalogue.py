import pandas as pd
import pytest
from PIL import Image

from clipft.catalogue import BadImagesError, CatalogueError, check_images, load_catalogue


def make_images(folder, names, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (size, size), (200, 10, 10)).save(folder / name)


def test_path_layout_resolves_relative_to_the_csv(tmp_path):
    make_images(tmp_path / "pics", ["a.png", "b.png"])
    pd.DataFrame({"image": ["pics/a.png", "pics/b.png"], "title": ["Red cap", ""], "colour": ["Red", "Red"]}).to_csv(
        tmp_path / "cat.csv", index=False
    )
    cat = load_catalogue(tmp_path / "cat.csv")
    assert cat.image_paths == [tmp_path / "pics/a.png", tmp_path / "pics/b.png"]
    assert cat.ids == ["2", "3"]  # no id column: the CSV line
    assert cat.title_column == "title"
    assert cat.titles() == ["Red cap", None]
    assert cat.missing == []


def test_kaggle_layout_works_with_no_options(tmp_path):
    make_images(tmp_path / "images", ["1163.jpg", "1525.jpg"])
    pd.DataFrame(
        {"id": [1163, 1525], "gender": ["Men", "Unisex"], "productDisplayName": ["Nike Jersey", "Puma Backpack"]}
    ).to_csv(tmp_path / "styles.csv", index=False)
    cat = load_catalogue(tmp_path / "styles.csv")
    assert cat.image_paths == [tmp_path / "images/1163.jpg", tmp_path / "images/1525.jpg"]
    assert cat.ids == ["1163", "1525"]
    assert cat.title_column == "productDisplayName"
    assert cat.frame["gender"].tolist() == ["Men", "Unisex"]


def test_real_fashion_catalogue_loads(fashion_dir):
    cat = load_catalogue(fashion_dir / "styles.csv", limit=50, seed=1)
    assert len(cat) == 50 and not cat.missing
    assert all(p.is_file() for p in cat.image_paths)


def test_missing_images_are_listed_with_their_csv_line(tmp_path):
    make_images(tmp_path / "images", ["1.jpg"])
    pd.DataFrame({"id": ["1", "2", None]}).to_csv(tmp_path / "styles.csv", index=False)
    cat = load_catalogue(tmp_path / "styles.csv")
    assert [(b.row, b.line) for b in cat.missing] == [(1, 3), (2, 4)]
    with pytest.raises(BadImagesError) as err:
        check_images(cat, skip_bad=False)
    assert isinstance(err.value, CatalogueError) and err.value.bad == cat.missing
    message = str(err.value)
    assert "styles.csv: 2 image(s) missing" in message
    assert "line 3:" in message and "2.jpg: file not found" in message
    assert "--skip-bad" in message
    check_images(cat, skip_bad=True)  # no error when skipping


def test_explicit_columns_and_errors(tmp_path):
    make_images(tmp_path / "elsewhere", ["x.jpg"])
    pd.DataFrame({"sku": ["x"], "photo": ["x"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(CatalogueError, match="no image column"):
        load_catalogue(tmp_path / "c.csv")
    with pytest.raises(CatalogueError, match="no image column 'nope'"):
        load_catalogue(tmp_path / "c.csv", image_column="nope")
    cat = load_catalogue(tmp_path / "c.csv", id_column="sku", image_dir=tmp_path / "elsewhere")
    assert cat.image_paths == [tmp_path / "elsewhere/x.jpg"] and cat.ids == ["x"]


def test_limit_is_a_reproducible_sample(tmp_path):
    make_images(tmp_path / "images", [f"{i}.jpg" for i in range(30)])
    pd.DataFrame({"id": range(30)}).to_csv(tmp_path / "s.csv", index=False)
    a = load_catalogue(tmp_path / "s.csv", limit=10, seed=3)
    b = load_catalogue(tmp_path / "s.csv", limit=10, seed=3)
    c = load_catalogue(tmp_path / "s.csv", limit=10, seed=4)
    assert a.ids == b.ids != c.ids
    assert a.ids == sorted(a.ids, key=int)  # catalogue order is kept
    assert all(line == int(i) + 2 for i, line in zip(a.ids, a.lines))


def test_unreadable_csv_errors(tmp_path):
    with pytest.raises(CatalogueError, match="not found"):
        load_catalogue(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CatalogueError, match="empty.csv: the file is empty"):
        load_catalogue(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("id,image\n")
    with pytest.raises(CatalogueError, match="no rows"):
        load_catalogue(tmp_path / "header.csv")


def test_generated_catalogue_is_deterministic(tmp_path):
    from clipft.commands.sample_data import make_catalogue

    a = pd.read_csv(make_catalogue(tmp_path / "a", n=9, size=24, seed=5))
    b = pd.read_csv(make_catalogue(tmp_path / "b", n=9, size=24, seed=5))
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a/images/00000.jpg").read_bytes() == (tmp_path / "b/images/00000.jpg").read_bytes()
    assert set(a["articleType"]) == {"Tshirts", "Mugs", "Pans"}
