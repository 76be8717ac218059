"""Image datasets for calibration and evaluation, each with a deterministic, non-overlapping
calibration/evaluation split.

Supported layouts (chosen by :func:`open_dataset` from what is on disk):

* wnid-named folder: ``<wnid>_<name>.JPEG`` files, label = index of the wnid in the ImageNet
  synset list (``imagenet_synsets.txt``, bundled). One image per class, so the split is by class:
  calibration = class index % 8 == 0.
* class folder (torchvision ImageFolder): ``<root>/<class>/<img>``; classes sorted by name unless
  a class-index map is given. Split: every 8th image of each class (sorted by file name) calibrates.
* CIFAR-10 archive: ``cifar10-train.tar.gz`` / ``cifar10-test.tar.gz`` holding
  ``cifar10/{train,test}/<class>/NNNN.jpg``. Calibration images come from the train archive,
  evaluation images from the test archive, so they never overlap.
"""
from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from calib.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SYNSETS_FILE = Path(__file__).with_name("imagenet_synsets.txt")
CALIB_EVERY = 8
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
WNID_RE = re.compile(r"^(n\d{8})_")


@dataclass(frozen=True)
class Sample:
    """One image: where its bytes are, its label, and whether it belongs to the calibration split."""

    source: str  # file path, or member name inside an archive
    label: int
    calibration: bool


def imagenet_wnids() -> list[str]:
    return [line.split()[0] for line in SYNSETS_FILE.read_text().splitlines() if line.strip()]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_wnid_folder(root: Path) -> list[Sample]:
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    samples = []
    for path in _images_in(root):
        m = WNID_RE.match(path.name)
        if not m or m.group(1) not in index:
            raise DataError(f"{path.name} in {root} is not named <wnid>_<name> with an ImageNet-1k wnid")
        label = index[m.group(1)]
        samples.append(Sample(str(path), label, label % CALIB_EVERY == 0))
    return samples


def scan_class_folder(root: Path, class_to_idx: dict[str, int] | None = None) -> list[Sample]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    mapping = class_to_idx or {c: i for i, c in enumerate(classes)}
    unknown = [c for c in classes if c not in mapping]
    if unknown:
        raise DataError(f"class folders {unknown[:5]} in {root} are not in the class-index map")
    samples = []
    for c in classes:
        for k, path in enumerate(_images_in(root / c)):
            samples.append(Sample(str(path), mapping[c], k % CALIB_EVERY == 0))
    return samples


def scan_cifar_archive(path: Path) -> list[Sample]:
    """Members of a CIFAR-10 tar; all calibration for the train archive, all evaluation for test."""
    calibration = "train" in path.name
    samples = []
    try:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and len(parts) >= 3 and parts[-2] in CIFAR10_CLASSES:
                    samples.append(Sample(member.name, CIFAR10_CLASSES.index(parts[-2]), calibration))
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot read CIFAR archive {path}: {e}") from None
    return sorted(samples, key=lambda s: s.source)


def scan(path: str | Path) -> tuple[str, list[Sample]]:
    """Detect the layout of ``path`` and list its samples: (kind, samples)."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if root.is_file():
        if not root.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise DataError(f"{root} is a file but not a CIFAR-10 tar archive")
        kind, samples = "cifar10", scan_cifar_archive(root)
    elif any(p.is_dir() for p in root.iterdir()):
        kind, samples = "class-folder", scan_class_folder(root)
    else:
        kind, samples = "wnid-folder", scan_wnid_folder(root)
    if not samples:
        raise DataError(f"no images found in {root} (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    return kind, samples


class ImageDataset(Dataset):
    """Decodes samples lazily (from files or from one in-memory tar) and applies a transform."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, archive: Path | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.archive = archive
        self._members: dict[str, bytes] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def _bytes(self, source: str) -> bytes:
        if self.archive is None:
            return Path(source).read_bytes()
        if self._members is None:
            wanted = {s.source for s in self.samples}
            with tarfile.open(self.archive) as tar:
                self._members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name in wanted}
        return self._members[source]

    def __getitem__(self, i: int):
        sample = self.samples[i]
        try:
            image = Image.open(io.BytesIO(self._bytes(sample.source))).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot decode image {sample.source}: {e}") from None
        return self.transform(image), sample.label


def open_split(path: str | Path, split: str, transform: Callable, limit: int | None = None) -> ImageDataset:
    """The ``calibration`` or ``evaluation`` split of the data at ``path``.

    For CIFAR-10, give either archive: calibration always reads ``cifar10-train``, evaluation
    ``cifar10-test`` from the same folder. ``limit`` takes an evenly spaced subset (deterministic).
    """
    if split not in ("calibration", "evaluation"):
        raise ValueError(f"split must be calibration or evaluation, got {split!r}")
    path = Path(path)
    archive = None
    if path.is_file() and "cifar10" in path.name:
        archive = path.with_name("cifar10-train.tar.gz" if split == "calibration" else "cifar10-test.tar.gz")
        path = archive
    kind, samples = scan(path)
    chosen = [s for s in samples if s.calibration == (split == "calibration")]
    if not chosen:
        raise DataError(f"the {split} split of {path} ({kind}) has zero images")
    if limit is not None and limit < len(chosen):
        if limit <= 0:
            raise DataError(f"image limit must be positive, got {limit}")
        step = len(chosen) / limit
        chosen = [chosen[int(i * step)] for i in range(limit)]
    return ImageDataset(chosen, transform, archive=archive)
