"""``vitq.files`` helpers."""
from __future__ import annotations

from pathlib import Path

import pytest

from vitq.files import in_scratch_dir


def test_scratch_dir_keeps_debug_files_out_of_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError), in_scratch_dir() as scratch:
        assert Path.cwd() == scratch.resolve() != tmp_path
        Path("sym_shape_infer_temp.onnx").write_text("debug dump")
        raise RuntimeError("third-party failure")
    assert Path.cwd() == tmp_path
    assert list(tmp_path.iterdir()) == []
    assert not scratch.exists()
