"""Atomic writes: all or nothing, and the umask's file modes (tempfile's own 0600/0700 would hide results)."""

import os
import stat
import tempfile

import numpy as np
import pytest

from plus.io import as_created, atomic_path, atomic_write, umask, write_json


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=lambda m: f"umask{m:03o}")
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_umask_is_read_without_changing_it(mask):
    assert umask() == mask
    assert umask() == mask


def test_atomic_outputs_get_the_mode_open_would_give(tmp_path, mask):
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as fh:
        fh.write("x")
    write_json(tmp_path / "a.json", {"a": 1})
    with atomic_write(tmp_path / "b.tsv.gz") as fh:
        fh.write("x\n")
    with atomic_path(tmp_path / "c.npy") as tmp:
        np.save(tmp, np.arange(3))
    for name in ("a.json", "b.tsv.gz", "c.npy"):
        assert mode(tmp_path / name) == mode(plain) == 0o666 & ~mask, name


def test_temporary_directory_gets_the_mode_mkdir_would_give(tmp_path, mask):
    (tmp_path / "made").mkdir()
    made = tempfile.mkdtemp(dir=tmp_path)
    as_created(made)
    assert mode(made) == mode(tmp_path / "made") == 0o777 & ~mask


def test_failed_atomic_write_leaves_nothing(tmp_path):
    (tmp_path / "keep.json").write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "keep.json") as fh:
        fh.write("half")
        raise RuntimeError("stop")
    assert (tmp_path / "keep.json").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]
