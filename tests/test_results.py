"""Tables read back from a result folder: a damaged cell is refused with its column, line and value."""

import numpy as np
import pandas as pd
import pytest

from tvtheory import results


def read_back(tmp_path, df: pd.DataFrame, damage=None) -> pd.DataFrame:
    path = results.write_csv(tmp_path / "t.csv", df)
    if damage:
        line, value = damage
        lines = path.read_text().splitlines(keepends=True)
        lines[line - 1] = lines[line - 1].rsplit(",", 1)[0] + f",{value}\n"
        path.write_text("".join(lines))
    return results.read_csv(path)


TABLE = pd.DataFrame({"seed": [0, 1, 2], "loss": [0.5, np.nan, 1e-7], "task": ["T1", "T2", "T1"],
                      "diverged": [False, True, False]})


def test_every_table_write_csv_writes_reads_back_and_passes(tmp_path):
    back = read_back(tmp_path, TABLE)
    results.check_cells(back)
    pd.testing.assert_frame_equal(back, TABLE, check_dtype=False)
    results.check_cells(read_back(tmp_path, pd.DataFrame()))
    results.check_cells(read_back(tmp_path, TABLE.assign(task=["a", None, "1x"])))   # text and blanks are text


@pytest.mark.parametrize("line,value,expected", [
    (3, "abc", "column 'diverged', line 3: 'abc' where the column's other values are True/False"),
    (4, "1", "column 'diverged', line 4: '1' where the column's other values are True/False"),
])
def test_a_damaged_true_false_cell_is_refused_with_its_column_line_and_value(tmp_path, line, value, expected):
    back = read_back(tmp_path, TABLE, (line, value))
    with pytest.raises(ValueError) as e:
        results.check_cells(back)
    assert str(e.value) == expected


def test_text_in_a_column_of_numbers_is_refused(tmp_path):
    df = TABLE[["seed", "loss"]]
    back = read_back(tmp_path, df, (2, "0.5x"))
    with pytest.raises(ValueError, match="column 'loss', line 2: '0.5x' where the column's other values are numbers"):
        results.check_cells(back)
    results.check_cells(read_back(tmp_path, df, (2, "inf")))          # an infinity is a number


def test_a_number_in_a_column_of_text_is_refused(tmp_path):
    back = read_back(tmp_path, pd.DataFrame({"task": ["T1", "T2", "5", "T1"]}))
    with pytest.raises(ValueError, match="column 'task', line 4: '5' where the column's other values are text"):
        results.check_cells(back)
