"""dabs_rq.io: a write replaces the file whole or not at all, and leaves no temporary file behind."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from dabs_rq.io import atomic_file, atomic_path, write_array_atomic, write_json_atomic, write_text_atomic


def test_a_failing_block_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.txt"
    write_text_atomic(path, "old\n")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failing_writer_of_a_path_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "array.npy"
    with pytest.raises(ValueError), atomic_path(path, suffix=".npy") as tmp:
        assert tmp.parent == path.parent and tmp.name.endswith(".npy")
        np.save(tmp, np.arange(3))
        raise ValueError("a bad row")
    assert list(path.parent.iterdir()) == []


def test_a_write_replaces_the_file_and_creates_missing_folders(tmp_path):
    path = tmp_path / "a" / "b" / "record.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    write_json_atomic(path, {"value": 2.0})
    assert json.loads(path.read_text()) == {"value": 2.0}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_json_keys_are_sorted_and_indent_none_is_one_line(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"b": 1, "a": 2}, indent=None)
    assert path.read_bytes() == b'{"a": 2, "b": 1}\n'


def test_text_is_utf8_with_newline_line_ends(tmp_path):
    path = tmp_path / "t.md"
    write_text_atomic(path, "a ± b\nc\n")
    assert path.read_bytes() == "a ± b\nc\n".encode()


def test_arrays_round_trip_as_npy(tmp_path):
    path = tmp_path / "rows.npy"
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_array_atomic(path, array)
    loaded = np.load(path, allow_pickle=False)
    assert loaded.dtype == np.int32 and np.array_equal(loaded, array)


def test_a_new_file_gets_the_umask_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "shared.md", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.md").stat().st_mode) == 0o644
