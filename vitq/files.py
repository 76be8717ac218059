"""Writing files so that a failure never leaves a partial one behind, and checking an output path
before any work starts (writable, not an input, the right suffix)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vitq.errors import VitqError


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result into place, so failures leave no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _writable_dir(folder: Path, what: str, target: Path) -> None:
    """``folder``'s nearest existing ancestor is a folder this process can create files in (tried, not guessed:
    permission bits say nothing for root or a read-only mount); ``target`` is what the message names."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise VitqError(f"cannot write {what} {target}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".vitq-probe-", suffix=".tmp")
    except OSError as e:
        raise VitqError(f"cannot write {what} {target}: folder {existing} is not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def check_output(path: str | Path | None, *inputs: str | Path | None, suffix: str | tuple[str, ...] | None = None,
                 what: str = "output") -> Path | None:
    """Fail before any work when ``path`` could not be written at the end: it is one of ``inputs`` (None
    entries are skipped), lacks ``suffix``, is a folder, or lies in a folder that is read-only or is a file.
    Creates nothing (missing parent folders are made when the file is written). None passes through."""
    if path is None:
        return None
    path = Path(path)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise VitqError(f"{what} {path} would overwrite the input {source}; write it under another name")
    suffixes = (suffix,) if isinstance(suffix, str) else suffix
    if suffixes and path.suffix.lower() not in suffixes:
        raise VitqError(f"{what} must end in {' or '.join(suffixes)}, got {path}")
    if path.is_dir():
        raise VitqError(f"cannot write {what} {path}: it is a folder")
    _writable_dir(path.parent, what, path)
    return path


def check_output_dir(path: str | Path | None, what: str = "output folder") -> Path | None:
    """Like :func:`check_output` for a folder that will be created (or reused)."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VitqError(f"cannot use {what} {path}: it is a file")
    _writable_dir(path, what, path)
    return path


@contextlib.contextmanager
def in_scratch_dir() -> Iterator[Path]:
    """Run the body with a fresh temporary directory as the working directory (removed afterwards), for
    third-party code that writes debug files into the current directory (``contextlib.chdir`` is 3.11+)."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            yield Path(scratch)
        finally:
            os.chdir(previous)
