"""Small data files for tests that need a dataset on disk (no ../shared)."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image


def write_cifar_archive(folder: Path, split: str, n: int) -> Path:
    """``folder/cifar10-<split>.tar.gz`` laid out like the real one: ``n`` 32 px JPEGs alternating cat / ship,
    each a different colour."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cifar10-{split}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), ((40 * i) % 256, 90 + i % 7, 160)).save(buf, format="JPEG")
            info = tarfile.TarInfo(f"cifar10/{split}/{'cat' if i % 2 else 'ship'}/{i:04d}.jpg")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    return path
