import os
import stat

import pytest

from lightsr.paths import replaced_atomically


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
