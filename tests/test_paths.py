import os
import stat
from pathlib import Path

import pytest

from lightsr.paths import replaced_atomically, shared_dir


def test_replaced_atomically_moves_the_file_into_place_with_the_umask_mode(tmp_path):
    target = tmp_path / "out.bin"
    umask = os.umask(0o022)
    try:
        with replaced_atomically(target) as temporary:
            assert temporary.parent == tmp_path and temporary.exists() and not target.exists()
            temporary.write_bytes(b"new")
    finally:
        os.umask(umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["out.bin"]


def test_replaced_atomically_keeps_the_old_file_when_the_block_fails(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), replaced_atomically(target) as temporary:
        temporary.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_shared_dir_is_the_environment_variable_or_found_from_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LIGHTSR_SHARED", str(tmp_path / "elsewhere"))
    assert shared_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("LIGHTSR_SHARED")
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    assert shared_dir() == work / "shared"  # nothing exists: the first candidate
    (tmp_path / "shared").mkdir()
    assert shared_dir() == tmp_path / "shared"  # ../shared, beside a checkout
    (work / "shared").mkdir()
    assert shared_dir() == work / "shared"  # ./shared wins


def test_conftest_sets_the_shared_folder_explicitly():
    # conftest.py sets LIGHTSR_SHARED (unless the caller did): ../shared beside the repository.
    assert os.environ.get("LIGHTSR_SHARED")
    assert shared_dir() == Path(os.environ["LIGHTSR_SHARED"])
