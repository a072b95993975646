"""Catalogue CSVs as users have them: separators, unquoted commas, quoted line breaks, bad lines."""
import contextlib
import logging
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from clipft.catalogue import CatalogueError, iter_catalogue, load_catalogue, validate_catalogue
from clipft.csvfile import CsvError, detect_separator, read_csv_frames, read_header
from conftest import run

KAGGLE_HEADER = "id,gender,articleType,baseColour,productDisplayName\n"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_unquoted_commas_in_a_last_title_column_are_repaired_and_reported(tmp_path, caplog):
    csv = write(tmp_path / "styles.csv", KAGGLE_HEADER
                + "1,Men,Tshirts,Blue,Plain blue tee\n"
                + "2,Unisex,Shoes,White,Newfeel Unisex White, Blue and Orange Casual Shoes\n"
                + "3,Men,Ties,Red,Turtle Red Tie, Cufflink, and Pocket Square\n")
    with caplog.at_level(logging.WARNING):
        cat = load_catalogue(csv)
    assert cat.frame["productDisplayName"].tolist() == [
        "Plain blue tee", "Newfeel Unisex White, Blue and Orange Casual Shoes", "Turtle Red Tie, Cufflink, and Pocket Square"]
    assert cat.frame["baseColour"].tolist() == ["Blue", "White", "Red"]
    assert cat.lines == [2, 3, 4]
    assert "2 line(s) had unquoted separators in the last column 'productDisplayName'" in caplog.text
    assert "line 3: 6 fields" in caplog.text


def test_malformed_lines_are_listed_with_their_line_or_skipped(tmp_path, caplog):
    # the title is not the last column, so an extra field could belong anywhere
    csv = write(tmp_path / "c.csv", "id,title,colour\n1,red mug,Red\n2,mug, blue,Blue\n3,pan,Black\n4,a,b,c,d\n")
    with pytest.raises(CatalogueError) as err:
        load_catalogue(csv)
    message = str(err.value)
    assert "c.csv: 2 malformed line(s)" in message and "line 3: 4 fields" in message and "line 5: 5 fields" in message
    assert "--skip-bad" in message
    with caplog.at_level(logging.WARNING):
        cat = load_catalogue(csv, skip_bad=True)
    assert cat.ids == ["1", "3"] and cat.lines == [2, 4]
    assert "skipped (--skip-bad)" in caplog.text


def test_chunks_after_a_malformed_line_keep_every_good_row_and_its_line(tmp_path):
    rows = [f"{i},mug {i},Red\n" for i in range(1, 8)]
    rows[5] = "6,mug, six,Red\n"  # line 7
    csv = write(tmp_path / "c.csv", "id,title,colour\n" + "".join(rows))
    chunks = list(iter_catalogue(csv, 2, skip_bad=True))
    assert [c.ids for c in chunks] == [["1", "2"], ["3", "4"], ["5", "7"]]
    assert [c.lines for c in chunks] == [[2, 3], [4, 5], [6, 8]]
    with pytest.raises(CatalogueError, match="line 7: 4 fields"):
        validate_catalogue(iter_catalogue(csv, 2), skip_bad=True)  # skipping photos is not skipping lines


def test_line_numbers_count_quoted_line_breaks_and_blank_lines(tmp_path):
    csv = write(tmp_path / "c.csv", 'id,title\n1,"a mug\nwith a lid"\n\n2,pan\n3,"""quoted"" pot"\n')
    cat = load_catalogue(csv)
    assert cat.ids == ["1", "2", "3"] and cat.lines == [2, 5, 6]
    assert cat.frame["title"].tolist() == ["a mug\nwith a lid", "pan", '"quoted" pot']
    assert cat.missing[1].describe().startswith("line 5:")  # photo 2.jpg is absent: named by its line


def test_the_fast_and_careful_readers_agree(tmp_path):
    plain = "id,title,colour,size\n1,mug,Red,NA\n2,pan,,L\n3,pot,Black,\n"
    fast = pd.concat(read_csv_frames(write(tmp_path / "fast.csv", plain)))
    # a blank line sends a file to the csv module (quotes on one line do not)
    careful = pd.concat(read_csv_frames(write(tmp_path / "careful.csv", plain.replace("pot", '"pot"') + "\n")))
    pd.testing.assert_frame_equal(fast.fillna("<missing>"), careful.fillna("<missing>"), check_dtype=False)
    assert fast.loc[2, "size"] == "NA"  # "NA" is a value; only an empty field is missing
    assert pd.isna(fast.loc[3, "colour"]) and pd.isna(careful.loc[3, "colour"])


@pytest.mark.parametrize("name,sep", [("c.tsv", "\t"), ("c.csv", ";"), ("c.txt", "|")])
def test_separators_are_found_from_the_header(tmp_path, name, sep):
    csv = write(tmp_path / name, sep.join(["id", "title", "colour"]) + "\n" + sep.join(["1", "red, big mug", "Red"]) + "\n")
    assert detect_separator(csv) == sep
    assert load_catalogue(csv).frame["title"].tolist() == ["red, big mug"]
    assert load_catalogue(csv, sep=sep).frame["colour"].tolist() == ["Red"]


def test_header_only_files_and_duplicate_ids_are_refused(tmp_path):
    header_only = write(tmp_path / "h.csv", "id,title\n")
    with pytest.raises(CatalogueError, match="h.csv: catalogue has no rows, only a header"):
        load_catalogue(header_only)
    with pytest.raises(CatalogueError, match="no rows"):
        list(iter_catalogue(header_only, 10))
    dup = write(tmp_path / "d.csv", "id,title\n7,mug\n8,pan\n7,pot\n")
    with pytest.raises(CatalogueError, match="d.csv: 1 id\\(s\\) appear more than once: id 7 on lines 2, 4"):
        load_catalogue(dup)
    with pytest.raises(CatalogueError, match="id 7 on lines 2, 4"):
        validate_catalogue(iter_catalogue(dup, 2), skip_bad=True)  # across chunks too
    twice = write(tmp_path / "t.csv", "id,title,title\n1,a,b\n")
    with pytest.raises(CatalogueError, match="t.csv: column\\(s\\) title appear more than once"):
        load_catalogue(twice)


def test_text_that_is_not_utf8_is_named(tmp_path):
    csv = tmp_path / "u16.csv"
    csv.write_text("id,title\n1,mug\n", encoding="utf-16")
    with pytest.raises(CatalogueError, match="u16.csv: not UTF-8 text"):
        load_catalogue(csv)


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail, rather than hang the suite, if the block takes longer (opening a FIFO blocks)."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(params=["fifo", "device"])
def not_a_file(request, tmp_path):
    """A FIFO nobody writes to (opening it blocks) and /dev/zero (it never ends)."""
    if request.param == "device":
        return "/dev/zero", "a device"
    fifo = tmp_path / "catalogue.csv"
    os.mkfifo(fifo)
    return str(fifo), "a FIFO"


def test_a_fifo_or_a_device_is_refused_without_reading_it(not_a_file):
    path, kind = not_a_file
    message = f"{path}: not a regular file ({kind}); give a CSV file"
    with deadline(20):
        for read in (read_header, lambda p: next(read_csv_frames(p)), lambda p: next(read_csv_frames(p, sep=","))):
            with pytest.raises(CsvError) as err:
                read(Path(path))
            assert str(err.value) == message
        with pytest.raises(CatalogueError, match="not a regular file"):
            load_catalogue(path)


@pytest.mark.parametrize("command", [
    ["zeroshot", "--prompts", "color", "--data", "{data}", "--model", "clipft-tiny"],
    ["finetune", "--set", "data={data}", "--set", "prompts=[color]", "--set", "model=clipft-tiny"],
], ids=["zeroshot --data", "finetune --set data="])
def test_the_cli_refuses_a_fifo_or_a_device_as_data_with_one_line(tmp_path, not_a_file, command):
    path, kind = not_a_file
    with deadline(60):
        result = run([a.format(data=path) for a in command] + ["--out", str(tmp_path / "out")], expect=1)
    assert result.output.strip() == f"Error: {path}: not a regular file ({kind}); give a CSV file"
