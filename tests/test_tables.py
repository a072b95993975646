import pandas as pd

from clipft.reporting.tables import markdown_table


def test_markdown_table():
    frame = pd.DataFrame({"attribute": ["color", "lid"], "accuracy": [0.51234, float("nan")], "n": [10, 4]})
    assert markdown_table(frame) == (
        "| attribute | accuracy | n |\n|---|---|---|\n| color | 0.512 | 10 |\n| lid |  | 4 |\n"
    )
    pivot = frame.set_index("attribute")[["accuracy"]]
    assert markdown_table(pivot).splitlines()[0] == "| attribute | accuracy |"
