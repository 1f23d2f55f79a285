"""Dataset files: the error type, md5 checks cached per process, atomic downloads and
extraction."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import threading
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["DatasetError", "md5sum", "check_md5", "download_file", "write_atomically",
           "extract_members", "DOWNLOAD_TIMEOUT_S"]

DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20


class DatasetError(ValueError):
    """A dataset file is corrupt, malformed, or could not be fetched."""


_md5_cache: dict[tuple[str, int, int], str] = {}
_md5_lock = threading.Lock()


def md5sum(path: str | os.PathLike) -> str:
    """The file's md5 hex digest, computed once per process for a given path, size and mtime."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _md5_lock:
        if key in _md5_cache:
            return _md5_cache[key]
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    with _md5_lock:
        _md5_cache[key] = digest.hexdigest()
    return _md5_cache[key]


def check_md5(path: str | os.PathLike, expected: str, owner: str, remedy: str) -> Path:
    """``path`` if its (cached) md5 is ``expected``, else a DatasetError naming the file, both
    sums, and ``remedy`` (how to get a good copy)."""
    got = md5sum(path)
    if got != expected:
        raise DatasetError(f"{owner}: {path} has md5 {got}, expected {expected}: the file is "
                           f"corrupt or not the official one. {remedy}")
    return Path(path)


def _fetch_to(url: str, tmp: Path) -> str:
    """Stream ``url`` into ``tmp`` (fsynced); return the md5 of what was written."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
            open(tmp, "wb") as out:
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable too (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _try_mirror(url: str, target: Path, md5: str) -> str | None:
    """Download ``url`` to ``target`` atomically; None on success, else why it failed."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        got = _fetch_to(url, tmp)
        if got != md5:
            return f"{url}: md5 {got} does not match the expected {md5}"
        os.replace(tmp, target)
        _fsync_folder(target.parent)
        return None
    except OSError as e:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
        return f"{url}: {e}"
    finally:
        tmp.unlink(missing_ok=True)


def download_file(filename: str, folder: str | os.PathLike, md5: str,
                  mirrors: Sequence[str]) -> Path:
    """Fetch ``filename`` from the first mirror that serves it with the right md5.

    Written to a temp file in ``folder``, fsynced, then renamed into place, so an
    interrupted or refused download leaves nothing behind.
    """
    target = Path(folder) / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        failure = _try_mirror(mirror.rstrip("/") + "/" + filename, target, md5)
        if failure is None:
            return target
        failures.append(failure)
    raise DatasetError(f"could not download {filename} (expected md5 {md5}) into {folder}:\n  "
                       + "\n  ".join(failures or ["no mirrors configured"]))


def write_atomically(target: str | os.PathLike, fill: Callable[[BinaryIO], None]) -> Path:
    """Write ``target`` with ``fill(file)`` into a temp file beside it, fsync, then rename:
    readers see the old file or the whole new one, and a failure leaves no part behind."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        _fsync_folder(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _copy_from(source: BinaryIO, out: BinaryIO) -> None:
    shutil.copyfileobj(source, out, _CHUNK)


def extract_members(archive: str | os.PathLike, members: Mapping[str, str | os.PathLike]) -> None:
    """Copy the named regular-file members of a tar archive to the given paths, atomically.

    Nothing else in the archive is written, so member names like ``../x`` and links
    cannot reach outside the target paths.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            found = {m.name: m for m in tar.getmembers()}
            for name, target in members.items():
                member = found.get(name)
                if member is None or not member.isfile():
                    raise DatasetError(f"{archive}: has no regular file {name}")
                source = tar.extractfile(member)
                write_atomically(target, functools.partial(_copy_from, source))
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DatasetError(f"{archive}: not a valid tar archive, it is truncated or corrupt "
                           f"({type(e).__name__}: {e})") from e
