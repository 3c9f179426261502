"""Tables read back from a result folder: a damaged cell is refused with its column, line and value."""

import numpy as np
import pandas as pd
import pytest

from tvtheory import results


def edited(tmp_path, df: pd.DataFrame, edit=lambda lines: lines) -> pd.DataFrame:
    """``df`` written, its file's lines passed through ``edit`` (a function of the list of lines), read back."""
    path = results.write_csv(tmp_path / "t.csv", df)
    path.write_text("".join(edit(path.read_text().splitlines(keepends=True))))
    return results.read_csv(path)


def cell(line: int, column: int, value: str):
    """An edit: the field ``column`` (from 0) of line ``line`` (from 1) of the file set to ``value``."""
    def edit(lines):
        fields = lines[line - 1].rstrip("\n").split(",")
        fields[column] = value
        lines[line - 1] = ",".join(fields) + "\n"
        return lines
    return edit


TABLE = pd.DataFrame({"seed": [0, 1, 2], "loss": [0.5, np.nan, 1e-7], "task": ["T1", "T2", "T1"],
                      "diverged": [False, True, False]})


def test_every_table_write_csv_writes_reads_back_and_passes(tmp_path):
    back = edited(tmp_path, TABLE)
    results.check_cells(back)
    pd.testing.assert_frame_equal(back, TABLE, check_dtype=False)
    results.check_cells(edited(tmp_path, pd.DataFrame()))
    results.check_cells(edited(tmp_path, TABLE.assign(task=["a", None, "1x"])))   # text and blanks are text


@pytest.mark.parametrize("line,value,expected", [
    (3, "abc", "column 'diverged', line 3: 'abc' where the column's other values are True/False"),
    (4, "1", "column 'diverged', line 4: '1' where the column's other values are True/False"),
])
def test_a_damaged_true_false_cell_is_refused_with_its_column_line_and_value(tmp_path, line, value, expected):
    back = edited(tmp_path, TABLE, cell(line, 3, value))
    with pytest.raises(ValueError) as e:
        results.check_cells(back)
    assert str(e.value) == expected


def test_text_in_a_column_of_numbers_is_refused(tmp_path):
    df = TABLE[["seed", "loss"]]
    back = edited(tmp_path, df, cell(2, 1, "0.5x"))
    with pytest.raises(ValueError, match="column 'loss', line 2: '0.5x' where the column's other values are numbers"):
        results.check_cells(back)
    results.check_cells(edited(tmp_path, df, cell(2, 1, "inf")))          # an infinity is a number


def test_a_number_in_a_column_of_text_is_refused(tmp_path):
    back = edited(tmp_path, pd.DataFrame({"task": ["T1", "T2", "5", "T1"]}))
    with pytest.raises(ValueError, match="column 'task', line 4: '5' where the column's other values are text"):
        results.check_cells(back)


# ---------------------------------------------------------------- against the column kinds a run records
KINDS = {"seed": "int", "loss": "float", "task": "label", "diverged": "bool"}


def test_a_run_records_each_column_kind_and_its_tables_pass_against_them(tmp_path):
    back = edited(tmp_path, TABLE)
    assert results.column_kinds(back) == KINDS
    results.check_table(back, KINDS)
    # a perturbed number is still a table: whole numbers into fractions, fractions into whole numbers or NaN
    results.check_table(edited(tmp_path, TABLE, cell(2, 0, "0.5")), KINDS)
    results.check_table(edited(tmp_path, TABLE, cell(2, 1, "3")), KINDS)
    results.check_table(edited(tmp_path, TABLE, cell(4, 1, "")), KINDS)
    results.check_table(edited(tmp_path, TABLE, cell(2, 3, "True")), KINDS)
    results.check_table(edited(tmp_path, TABLE, cell(2, 2, "T3")), KINDS)       # a new name is judged


def test_text_with_blanks_is_text_and_a_record_from_before_labels_accepts_a_blank_name(tmp_path):
    """Labels (text without an empty or blank cell) are told apart from text since records say ``label``: a blank
    in one is refused. A record written before says ``text`` of both, which refuses only a column turned to
    numbers."""
    assert results.column_kinds(edited(tmp_path, TABLE, cell(3, 2, "")))["task"] == "text"
    assert results.column_kinds(edited(tmp_path, TABLE.iloc[:0]))["task"] == "text"
    older = {**KINDS, "task": "text"}
    for edit in (lambda ls: ls, cell(3, 2, ""), cell(4, 2, " ")):
        results.check_table(edited(tmp_path, TABLE, edit), older)
    for edit, value in ((lambda ls: [ls[0]] + [x.replace(",T1,", ",1,").replace(",T2,", ",2,") for x in ls[1:]], "1"),
                        (lambda ls: [ls[0]] + [x.replace(",T1,", ",True,").replace(",T2,", ",False,")
                                               for x in ls[1:]], "True")):
        with pytest.raises(ValueError, match=f"^column 'task', line 2: '{value}': the run wrote text in this column"):
            results.check_table(edited(tmp_path, TABLE, edit), older)


@pytest.mark.parametrize("edit,expected", [
    (cell(3, 3, ""), "column 'diverged', line 3: an empty or NaN cell: the run wrote True/False in this column"),
    (cell(4, 3, "abc"), "column 'diverged', line 4: 'abc': the run wrote True/False in this column"),
    (lambda ls: [ls[0]] + [x.replace("False", "0").replace("True", "1") for x in ls[1:]],
     "column 'diverged', line 2: '0': the run wrote True/False in this column"),
    (cell(3, 0, ""), "column 'seed', line 3: an empty or NaN cell: the run wrote numbers, none empty or NaN, in this "
                     "column"),
    (cell(2, 1, "NAN"), "column 'loss', line 2: 'NAN': the run wrote numbers in this column"),
    (cell(4, 1, "1_000"), "column 'loss', line 4: '1_000': the run wrote numbers in this column"),
    (lambda ls: [ls[0]] + [x.replace(",T1,", ",1,").replace(",T2,", ",2,") for x in ls[1:]],
     "column 'task', line 2: '1': the run wrote a name in every cell in this column"),
    (cell(3, 2, ""), "column 'task', line 3: an empty or NaN cell: the run wrote a name in every cell in this column"),
    (lambda ls: [ls[0]] + [x.replace(",T1,", ",True,").replace(",T2,", ",False,") for x in ls[1:]],
     "column 'task', line 2: 'True': the run wrote a name in every cell in this column"),
    (cell(4, 2, "  "), "column 'task', line 4: '  ': the run wrote a name in every cell in this column"),
    (lambda ls: [ls[0].replace(",loss,", ",lost,")] + ls[1:],
     "no column 'loss'; unexpected column 'lost' (the run wrote seed, loss, task, diverged)"),
    (lambda ls: [ls[0].replace(",diverged", "")] + ls[1:],
     "every row has more fields than the header"),
    (lambda ls: ls[:2] + [ls[2].rstrip("\n") + ",x\n"] + ls[3:],
     "Error tokenizing data. C error: Expected 4 fields in line 3, saw 5"),
    (lambda ls: [ls[0].rstrip("\n") + ",extra\n"] + [x.rstrip("\n") + ",1\n" for x in ls[1:]],
     "unexpected column 'extra' (the run wrote seed, loss, task, diverged)"),
    (lambda ls: [",".join(reversed(x.rstrip("\n").split(","))) + "\n" for x in ls],
     "its columns in another order (the run wrote seed, loss, task, diverged)"),
    (lambda ls: ls[:2] + ["\n"] + cell(3, 3, "abc")(ls)[2:],        # a blank line: the lines still count
     "column 'seed', line 3: an empty or NaN cell: the run wrote numbers, none empty or NaN, in this column"),
])
def test_a_table_out_of_its_recorded_kinds_is_refused_with_its_column_line_and_value(tmp_path, edit, expected):
    with pytest.raises(ValueError) as e:
        results.check_table(edited(tmp_path, TABLE, edit), KINDS)
    assert str(e.value).strip() == expected


def test_a_row_longer_than_the_header_is_refused_as_the_table_is_read(tmp_path):
    """pandas used to take the first column for an index and shift every other column one place to the left."""
    with pytest.raises(ValueError, match="every row has more fields than the header"):
        edited(tmp_path, TABLE, lambda ls: [ls[0].replace(",diverged", "")] + ls[1:])


@pytest.mark.parametrize("kinds,expected", [
    ([], "tables: list, not a mapping of the tables to their column kinds"),
    ({"metrics": KINDS}, "tables.reference: missing, not a mapping of the columns to their kinds"),
    ({"metrics": KINDS, "reference": "text"}, "tables.reference: str, not a mapping of the columns to their kinds"),
    ({"metrics": {**KINDS, "loss": "number"}, "reference": {}},
     "tables.metrics.loss: 'number', not one of bool, int, float, label, text"),
])
def test_a_damaged_record_of_column_kinds_is_refused_naming_its_entry(kinds, expected):
    results.check_kinds({"metrics": KINDS, "reference": {"model": "text"}}, ("metrics", "reference"))
    with pytest.raises(ValueError) as e:
        results.check_kinds(kinds, ("metrics", "reference"))
    assert str(e.value) == expected


def test_an_empty_table_or_a_nan_among_whole_numbers_is_named(tmp_path):
    with pytest.raises(ValueError, match="column 'seed', no row: the run wrote numbers, none empty or NaN, in"):
        results.check_table(edited(tmp_path, TABLE, lambda ls: ls[:1]), KINDS)
    with pytest.raises(ValueError, match="column 'seed', line 3: an empty or NaN cell"):
        results.check_table(edited(tmp_path, TABLE, cell(3, 0, "NaN")), KINDS)


def test_the_machine_is_read_from_the_first_processor_of_cpuinfo(tmp_path):
    """Results depend on the CPU's vector instructions, so provenance, timings and the benchmark name the CPU."""
    block = "processor\t: {i}\nmodel name\t: AMD EPYC {i}\ncpu family\t: 25\nmodel\t\t: {m}\nflags\t\t: {f}\n\n"
    info = tmp_path / "cpuinfo"
    info.write_text(block.format(i=0, m=17, f="fpu avx2 fma avx512f avx512bw") + block.format(i=1, m=1, f="fpu avx2"))
    m = results.machine(info)
    assert (m["cpu"], m["cpu_family_model"], m["vector_isa"]) == ("AMD EPYC 0", "25/17", ["avx2", "fma", "avx512f"])
    info.write_text(block.format(i=0, m=1, f="fpu avx2 fma"))
    assert results.machine(info)["vector_isa"] == ["avx2", "fma"]
    m = results.machine(tmp_path / "absent")              # no /proc/cpuinfo (another OS): nothing made up
    assert m["cpu_family_model"] is None and m["vector_isa"] is None and m["cpus"] >= 1
