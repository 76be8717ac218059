"""A reconstruction killed with SIGKILL continues from its last finished unit and ends bit-identical to
an uninterrupted run; a state written by another run is refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vitq.errors import VitqError

ROOT = Path(__file__).resolve().parents[2]
ITERS = 6  # per unit: 3 blocks -> 6 fine units, 3 blocks, 1 whole-model level


def child(out: str, state: str, iters: int = ITERS) -> None:
    """One process: a tiny random DeiT, W4A4 PFCR (ci preset), progress kept in ``state``."""
    import timm

    from vitq.pipeline.quantize import quantize
    from vitq.recipe import make_recipe
    from vitq.recon.resume import ResumeFile

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2,
                              num_classes=10).eval()
    images = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))]
    recipe = make_recipe("W4A4", "pfcr", {"recon_preset": "ci", "samples": 8, "iters": iters, "model_iters": 4}, seed=0)
    qm = quantize(model, "deit_tiny_patch16_224", images, recipe, progress=False, state=ResumeFile(Path(state)))
    torch.save(qm.model.state_dict(), out)


def start(out: Path, state: Path) -> subprocess.Popen:
    code = f"from tests.recon.test_resume import child; child({str(out)!r}, {str(state)!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def progress(state: Path) -> tuple[int, int] | None:
    try:
        saved = torch.load(state, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return None
    return saved["level"], saved["units_done"]


def test_sigkilled_reconstruction_resumes_bit_identical(tmp_path):
    full = start(tmp_path / "full.pt", tmp_path / "full.state")
    killed = start(tmp_path / "resumed.pt", tmp_path / "run.state")
    seen = None
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline:
        seen = progress(tmp_path / "run.state") if (tmp_path / "run.state").exists() else None
        if seen is not None and seen >= (0, 2):  # two fine units done: kill it mid-level
            os.kill(killed.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {killed.stderr.read()}"
    at_kill = progress(tmp_path / "run.state")
    assert at_kill is not None and at_kill[0] == 0 and at_kill[1] >= 2
    resumed = start(tmp_path / "resumed.pt", tmp_path / "run.state")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming reconstruction from {tmp_path / 'run.state'}: level 0, {at_kill[1]} unit(s)" in err
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err
    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def test_state_of_another_run_is_refused(tmp_path):
    from vitq.recon.resume import Position, ResumeFile

    state = ResumeFile(tmp_path / "s.pt")
    state.save("key-a", torch.nn.Linear(2, 2), Position(0, 1), ["fine"], [], torch.Generator())
    assert state.load("key-a")["units_done"] == 1
    with pytest.raises(VitqError, match="another model, recipe or calibration set"):
        state.load("key-b")
    assert ResumeFile(tmp_path / "s.pt", resume=False).load("key-b") is None  # starting over is allowed
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 16)
    with pytest.raises(VitqError, match="cannot read reconstruction state"):
        ResumeFile(tmp_path / "junk.pt").load("key-a")
