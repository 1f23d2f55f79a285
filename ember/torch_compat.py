"""Read PyTorch checkpoints (``torch.save`` files) without PyTorch, and without running
anything from the file.

A ``torch.save`` file is a zip archive: ``<root>/data.pkl`` (a pickle of the saved
object), ``<root>/data/<key>`` (one raw storage per key) and ``<root>/byteorder``.
Tensors are pickled as calls to ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)`` whose storage is a persistent reference ``('storage',
torch.FloatStorage, key, location, numel)``. The unpickler here admits exactly those
records (plus ``OrderedDict`` and plain containers), each mapped to a local, safe
reimplementation; any other global (``os.system``, ``builtins.eval``, ...) stops the
load before anything is called.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np

from ember.tensor import Tensor

__all__ = ["load_torch_state_dict", "TorchFileError", "UnsafeTorchFileError"]


class TorchFileError(ValueError):
    """The file is not a readable ``torch.save`` zip archive."""


class UnsafeTorchFileError(TorchFileError, pickle.UnpicklingError):
    """The pickle names a callable outside the tensor-rebuild records; nothing was run."""


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: widen it exactly (NumPy has no bfloat16)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


class _StorageType:
    """Stands for a ``torch.<Kind>Storage`` class: only its element type matters.
    Immutable, so a crafted pickle cannot alter it (pickle's BUILD needs a __dict__)."""

    __slots__ = ("name", "dtype", "convert")

    def __init__(self, name: str, dtype: Any, convert: Any = None) -> None:
        for key, value in (("name", name), ("dtype", np.dtype(dtype)), ("convert", convert)):
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise UnsafeTorchFileError(f"refused to modify torch.{self.name}")

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGES = {name: _StorageType(name, dtype, convert) for name, dtype, convert in [
    ("FloatStorage", np.float32, None), ("DoubleStorage", np.float64, None),
    ("HalfStorage", np.float16, None), ("BFloat16Storage", np.uint16, _bfloat16_to_float32),
    ("LongStorage", np.int64, None), ("IntStorage", np.int32, None),
    ("ShortStorage", np.int16, None), ("CharStorage", np.int8, None),
    ("ByteStorage", np.uint8, None), ("BoolStorage", np.bool_, None)]}


def _rebuild_tensor_v2(storage: np.ndarray, storage_offset: int, size: Any, stride: Any,
                       requires_grad: bool = False, backward_hooks: Any = None,
                       metadata: Any = None) -> Tensor:
    """torch's tensor record: a strided view into a storage, copied out (bounds checked,
    so a crafted file cannot make it read outside the storage)."""
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    offset = int(storage_offset)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise TorchFileError(f"tensor record with size {size}, stride {stride} and offset "
                             f"{offset} is malformed")
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise TorchFileError(f"tensor record of size {size}, stride {stride}, offset "
                                 f"{offset} reads past its storage of {storage.size} elements")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:] if storage.size else storage, size,
                                           tuple(s * item for s in stride), writeable=False)
    return Tensor._make(np.array(view), False, None)


def _rebuild_parameter(data: Tensor, requires_grad: bool = True,
                       backward_hooks: Any = None) -> Tensor:
    return data


def _int_tuple(values: Any, what: str) -> tuple:
    if not isinstance(values, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TorchFileError(f"tensor record has a malformed {what}: {values!r}")
    return tuple(values)


_GLOBALS = {("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            **{("torch", name): storage for name, storage in _STORAGES.items()}}


class _TorchUnpickler(pickle.Unpickler):
    """Admits the tensor-rebuild records only; storages come from the zip archive."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root, self.source = archive, root, source
        self.byteorder = _byteorder(archive, root)
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise UnsafeTorchFileError(
                f"{self.source}: refused to unpickle {module}.{name}: a state dict holds only "
                "tensors, OrderedDicts and plain containers, so this file is not a plain "
                "checkpoint (it may be malicious). Nothing from it was run.")
        return found

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and
                isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise TorchFileError(f"{self.source}: unknown persistent record {pid!r}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if key not in self.storages:
            self.storages[key] = self._read_storage(storage_type, key, numel)
        return self.storages[key]

    def _read_storage(self, storage_type: _StorageType, key: str, numel: Any) -> np.ndarray:
        try:
            raw = self.archive.read(f"{self.root}/data/{key}")
        except KeyError:
            raise TorchFileError(f"{self.source}: storage {key!r} is missing from the "
                                 "archive") from None
        dtype = storage_type.dtype.newbyteorder("<" if self.byteorder == "little" else ">")
        if len(raw) % dtype.itemsize or (isinstance(numel, int) and
                                         len(raw) // dtype.itemsize < numel):
            raise TorchFileError(f"{self.source}: storage {key!r} holds {len(raw)} bytes, "
                                 f"too few for {numel} {storage_type.name} elements")
        array = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype)
        return storage_type.convert(array) if storage_type.convert else array


def _byteorder(archive: zipfile.ZipFile, root: str) -> str:
    try:
        order = archive.read(f"{root}/byteorder").decode().strip()
    except KeyError:
        return "little"  # files from before torch 1.10 are little-endian
    if order not in ("little", "big"):
        raise TorchFileError(f"unknown byteorder {order!r}")
    return order


def _root(archive: zipfile.ZipFile, source: str) -> str:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise TorchFileError(f"{source}: not a torch.save archive (expected one "
                             f"<name>/data.pkl, found {len(pickles)})")
    return pickles[0].split("/")[0]


def _plain(obj: Any) -> Any:
    """OrderedDicts as dicts, all the way down."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict saved with ``torch.save`` (.pt/.pth) as ``{name: ember.Tensor}``,
    without torch and without executing anything from the file.

    Dtypes, shapes, strides and storage offsets are honoured (bfloat16 becomes float32,
    the one type NumPy lacks). ember layers named like torch's accept the result through
    ``load_state_dict``. A file that is a nested checkpoint (``{"model": ..., "epoch":
    ...}``) comes back with the same nesting.

    >>> model = ember.models.lenet5()
    >>> model.load_state_dict(ember.load_torch_state_dict("lenet5.pt"))  # doctest: +SKIP
    <All keys matched successfully>
    """
    source = os.fspath(path)
    try:
        archive = zipfile.ZipFile(source)
    except FileNotFoundError:
        raise TorchFileError(f"{source}: no such file") from None
    except zipfile.BadZipFile:
        raise TorchFileError(f"{source}: not a zip archive; only torch.save's default (zip) "
                             "format is supported, not the legacy format") from None
    with archive:
        root = _root(archive, source)
        unpickler = _TorchUnpickler(archive.read(f"{root}/data.pkl"), archive, root, source)
        try:
            return _plain(unpickler.load())
        except (TorchFileError, UnsafeTorchFileError):
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
                AttributeError) as err:
            raise TorchFileError(f"{source}: corrupt or unsupported pickle "
                                 f"({type(err).__name__}: {err})") from err
