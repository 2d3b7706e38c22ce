"""A file written through `replaced_atomically` is whole or untouched."""

import pytest

from custom_modules.atomic_file import replaced_atomically


def test_the_new_file_replaces_the_old_one_and_no_temporary_is_left(tmp_path) -> None:
    path = tmp_path / "sub" / "table.csv"
    for content in ("old", "new"):
        with replaced_atomically(path) as tmp:
            assert tmp.parent == path.parent and tmp.name.startswith(".table.csv.")
            tmp.write_text(content)
            assert not path.exists() or path.read_text() == "old"  # not visible before the end
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["table.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    path.write_text("old")
    with pytest.raises(RuntimeError), replaced_atomically(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_concurrent_writers_get_their_own_temporary_files(tmp_path) -> None:
    path = tmp_path / "f"
    with replaced_atomically(path) as first, replaced_atomically(path) as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert path.read_text() == "1"  # the outer block ends last


def test_the_file_gets_the_usual_permissions(tmp_path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    with replaced_atomically(tmp_path / "atomic") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "atomic").stat().st_mode == plain.stat().st_mode
