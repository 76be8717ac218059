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

Every problem with the data is a one-line :class:`DataError` naming the file: a missing path, an
unreadable or truncated archive, an image that does not decode, and an image larger than
``VITQ_MAX_IMAGE_PIXELS`` pixels (default 178,956,970, where Pillow itself stops: a decompression-bomb
guard; set the environment variable to raise or lower the limit).
"""
from __future__ import annotations

import io
import os
import re
import tarfile
import zlib
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
MAX_PIXELS_ENV = "VITQ_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # Pillow refuses (DecompressionBombError) above twice its MAX_IMAGE_PIXELS
ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)  # EOFError: a truncated .gz


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
    except ARCHIVE_ERRORS as e:
        raise DataError(f"cannot read CIFAR archive {path}: {_archive_problem(e)}") from None
    return sorted(samples, key=lambda s: s.source)


def _archive_problem(error: Exception) -> str:
    if isinstance(error, EOFError) or "unexpected end" in str(error).lower():
        return "the file is truncated (it ends before the archive does)"
    if isinstance(error, tarfile.ReadError) and "could not be opened" in str(error):
        return "not a tar archive (plain, or compressed with gzip, bzip2 or xz)"
    return f"{type(error).__name__}: {str(error)[:200] or 'unreadable'}"


def max_image_pixels() -> int:
    """The largest image (width x height) vitq decodes: ``VITQ_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, got {raw!r}")
    return value


def decode_image(data: bytes, source: str) -> Image.Image:
    """An RGB image from encoded bytes; a :class:`DataError` naming ``source`` for anything Pillow rejects,
    including images over :func:`max_image_pixels` (checked on the header, before decoding)."""
    limit = max_image_pixels()
    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # vitq applies its own limit below (Pillow's would only warn or raise later)
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > limit:
            raise DataError(f"image {source} is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
                            f"(a decompression-bomb guard; set {MAX_PIXELS_ENV} to allow larger images)")
        return image.convert("RGB")
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        if isinstance(e, UnidentifiedImageError):
            detail = "not an image format Pillow can read"
        else:
            detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DataError(f"cannot decode image {source}: {detail}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


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
    """Decodes samples lazily (from files or from one in-memory tar) and applies a transform.

    ``kind`` is the layout (:func:`scan`) and ``num_classes`` the size of the label space the labels
    come from (1000 for wnid folders, the class folders, 10 for CIFAR-10), when known. The transform may
    be set after construction (scan the data first, build the model, then set ``transform``); None
    yields PIL images."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None, archive: Path | None = None,
                 kind: str | None = None, num_classes: int | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.archive = archive
        self.kind = kind
        self.num_classes = num_classes
        self._members: dict[str, bytes] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def _bytes(self, source: str) -> bytes:
        if self.archive is None:
            return Path(source).read_bytes()
        if self._members is None:
            wanted = {s.source for s in self.samples}
            try:
                with tarfile.open(self.archive) as tar:
                    self._members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name in wanted}
            except ARCHIVE_ERRORS as e:
                raise DataError(f"cannot read CIFAR archive {self.archive}: {_archive_problem(e)}") from None
        if source not in self._members:
            raise DataError(f"cannot read CIFAR archive {self.archive}: member {source} disappeared")
        return self._members[source]

    def __getitem__(self, i: int):
        sample = self.samples[i]
        try:
            data = self._bytes(sample.source)
        except OSError as e:
            raise DataError(f"cannot read image {sample.source}: {e.strerror or e}") from None
        image = decode_image(data, sample.source)
        return (self.transform(image) if self.transform is not None else image), sample.label


def label_space(kind: str, root: Path) -> int | None:
    """How many classes the labels of a layout index into."""
    if kind == "wnid-folder":
        return len(imagenet_wnids())
    if kind == "cifar10":
        return len(CIFAR10_CLASSES)
    if kind == "class-folder":
        return sum(1 for p in root.iterdir() if p.is_dir())
    return None


def open_split(path: str | Path, split: str, transform: Callable | None, limit: int | None = None) -> ImageDataset:
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
    return ImageDataset(chosen, transform, archive=archive, kind=kind, num_classes=label_space(kind, path))
