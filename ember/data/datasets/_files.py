"""Dataset files: the error type, md5 checks cached per process, and atomic downloads."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DatasetError", "md5sum", "download_file", "DOWNLOAD_TIMEOUT_S"]

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
