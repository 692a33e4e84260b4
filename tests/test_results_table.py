"""The tidy results table: schema checks, atomic cell files and table, loading in one call."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from masc_fast.pipeline.results_table import (
    RESULT_COLUMNS,
    completed_cells,
    load_results,
    rebuild_table,
    tidy_rows,
    write_cell,
)

RUN = {"model": "mlp", "dataset": "digits", "p": 0.2, "seed": 1, "experiment": "exp1"}


def _measurements(values=(0.81, 0.77)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": ["input", "fc1", "model"],
            "subspaces": ["corrupted", "true", None],
            "split": ["test", "train", "test"],
            "labels": ["true", "corrupted", "true"],
            "metric": ["accuracy", "accuracy", "model_accuracy"],
            "value": [values[0], values[1], 0.9],
            "n": [450, 1347, 450],
        }
    )


def _no_temp_files(folder) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file()]


def test_tidy_rows_fills_constants_and_orders_columns():
    tidy = tidy_rows(_measurements(), **RUN)
    assert list(tidy.columns) == [*RESULT_COLUMNS, "n"]
    assert tidy["model"].tolist() == ["mlp"] * 3
    assert tidy["p"].dtype == float and tidy["seed"].dtype == np.int64
    assert tidy["subspaces"].tolist() == ["corrupted", "true", ""]  # None -> "" (not MASC)
    assert tidy["value"].tolist() == [0.81, 0.77, 0.9]


def test_tidy_rows_names_missing_columns():
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['model', 'seed'\]"):
        tidy_rows(_measurements(), dataset="digits", p=0.2, experiment="exp1")


def test_tidy_rows_rejects_conflicting_constant():
    rows = tidy_rows(_measurements(), **RUN)
    assert tidy_rows(rows, **RUN).equals(rows)  # agreeing constants are fine
    with pytest.raises(ValueError, match="column 'p'"):
        tidy_rows(rows, p=0.4)


def test_tidy_rows_rejects_unknown_subspaces_value():
    rows = _measurements().assign(subspaces=["corrupted", "noisy", ""])
    with pytest.raises(ValueError, match=r"'subspaces'.*\['noisy'\]"):
        tidy_rows(rows, **RUN)


def test_tidy_rows_rejects_fractional_seed_and_text_value():
    with pytest.raises(ValueError, match="'seed'"):
        tidy_rows(_measurements(), **{**RUN, "seed": 1.5})
    with pytest.raises(ValueError, match="'value'"):
        tidy_rows(_measurements().assign(value=["a", "b", "c"]), **RUN)


def test_write_cell_roundtrip_keeps_strings(tmp_path):
    rows = tidy_rows(_measurements(), **{**RUN, "model": "NA"})  # "NA" must stay a string
    path = write_cell(tmp_path, "NA-digits-p0.2-s1-exp1", rows)
    assert path == tmp_path / "cells" / "NA-digits-p0.2-s1-exp1.csv"
    back = load_results(path)
    pd.testing.assert_frame_equal(back, rows)
    assert completed_cells(tmp_path) == {"NA-digits-p0.2-s1-exp1"}
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize("bad", ["../escape", ".hidden", "a/b", "", "-x"])
def test_write_cell_rejects_unsafe_ids(tmp_path, bad):
    with pytest.raises(ValueError, match="cell id"):
        write_cell(tmp_path, bad, tidy_rows(_measurements(), **RUN))


def test_completed_cells_ignores_temp_files_and_missing_folder(tmp_path):
    assert completed_cells(tmp_path / "nowhere") == set()
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / ".a.tmp123.csv").write_text("partial")
    assert completed_cells(tmp_path) == set()


def test_rebuild_table_concatenates_cells_in_id_order(tmp_path):
    second = tidy_rows(_measurements((0.5, 0.4)), **{**RUN, "seed": 2})
    first = tidy_rows(_measurements(), **RUN)
    write_cell(tmp_path, "mlp-digits-p0.2-s2-exp1", second)
    write_cell(tmp_path, "mlp-digits-p0.2-s1-exp1", first)
    path = rebuild_table(tmp_path)
    assert path == tmp_path / "results.csv"
    table = pd.read_csv(path)  # one call, plain pandas
    assert tuple(table.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert table["seed"].tolist() == [1, 1, 1, 2, 2, 2]
    assert table["value"].tolist() == [0.81, 0.77, 0.9, 0.5, 0.4, 0.9]
    pd.testing.assert_frame_equal(
        load_results(tmp_path), pd.concat([first, second], ignore_index=True)
    )


def test_rebuild_table_without_cells_writes_header(tmp_path):
    path = rebuild_table(tmp_path)
    assert path.read_text().strip() == ",".join(RESULT_COLUMNS)
    assert load_results(path).empty


def test_failed_replace_leaves_old_table_and_no_temp_file(tmp_path, monkeypatch):
    write_cell(tmp_path, "a", tidy_rows(_measurements(), **RUN))
    path = rebuild_table(tmp_path)
    before = path.read_bytes()
    write_cell(tmp_path, "b", tidy_rows(_measurements((0.1, 0.2)), **{**RUN, "seed": 5}))

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        rebuild_table(tmp_path)
    with pytest.raises(OSError, match="simulated crash"):
        write_cell(tmp_path, "c", tidy_rows(_measurements(), **RUN))
    assert path.read_bytes() == before
    assert completed_cells(tmp_path) == {"a", "b"}
    assert _no_temp_files(tmp_path)


def test_failed_write_midway_leaves_old_table(tmp_path, monkeypatch):
    write_cell(tmp_path, "a", tidy_rows(_measurements(), **RUN))
    path = rebuild_table(tmp_path)
    before = path.read_bytes()
    original = pd.DataFrame.to_csv

    def half_then_crash(self, target, *args, **kwargs):
        with open(target, "w") as handle:
            handle.write("model,dataset\nmlp,")  # a torn write
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        rebuild_table(tmp_path)
    monkeypatch.setattr(pd.DataFrame, "to_csv", original)
    assert path.read_bytes() == before
    assert _no_temp_files(tmp_path)


def test_rebuild_names_a_bad_cell_file(tmp_path):
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "broken.csv").write_text("layer,value\ninput,0.5\n")
    with pytest.raises(ValueError, match="broken.csv.*lack the column"):
        rebuild_table(tmp_path)


def test_parquet_needs_pyarrow(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pyarrow"):
            rebuild_table(tmp_path, format="parquet")
    else:
        write_cell(tmp_path, "a", tidy_rows(_measurements(), **RUN))
        path = rebuild_table(tmp_path, format="parquet")
        pd.testing.assert_frame_equal(
            load_results(path), load_results(tmp_path / "cells" / "a.csv")
        )
    with pytest.raises(ValueError, match="format"):
        rebuild_table(tmp_path, format="xlsx")


def test_load_results_finds_table_under_out_folder_and_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results table"):
        load_results(tmp_path)
    results = tmp_path / "results"
    write_cell(results, "a", tidy_rows(_measurements(), **RUN))
    assert len(load_results(tmp_path)) == 3  # from the cell files, before any rebuild
    rebuild_table(results)
    assert len(load_results(tmp_path)) == 3
