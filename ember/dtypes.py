"""ember's dtypes are NumPy dtypes under torch-like names."""

from __future__ import annotations

from ember.backend import xp

float32 = xp.dtype("float32")
float64 = xp.dtype("float64")
float16 = xp.dtype("float16")
int64 = xp.dtype("int64")
int32 = xp.dtype("int32")
int16 = xp.dtype("int16")
int8 = xp.dtype("int8")
uint8 = xp.dtype("uint8")
bool_ = xp.dtype("bool")
float = float32  # noqa: A001  (torch.float is float32)
double = float64
long = int64
int = int32  # noqa: A001  (torch.int is int32)

DEFAULT_FLOAT = float32
_NAMES = {float32: "float32", float64: "float64", float16: "float16", int64: "int64",
          int32: "int32", int16: "int16", int8: "int8", uint8: "uint8", bool_: "bool"}


def dtype_name(dtype: xp.dtype) -> str:
    """``ember.float32`` style name of a dtype, for reprs and error messages."""
    return "ember." + _NAMES.get(xp.dtype(dtype), str(dtype))


def is_floating(dtype: xp.dtype) -> bool:
    return xp.dtype(dtype).kind == "f"


def to_dtype(dtype) -> xp.dtype:
    """Accept ember/NumPy dtypes, Python types and strings like 'float32'."""
    if isinstance(dtype, xp.dtype):  # already one (x.float(), x.to(ember.int64)): as it is
        return dtype
    if dtype is bool or dtype == "bool":
        return bool_
    return xp.dtype(dtype)


def infer_dtype(array) -> xp.dtype:
    """The dtype of data given without one: float64 becomes float32.

    torch does this for Python floats, but ``torch.tensor`` keeps a float64 NumPy
    array's dtype. ember converts arrays too, on purpose: NumPy makes float64 by
    default, and one float64 input would otherwise meet float32 weights (an error) or
    slow everything down. Pass ``dtype=ember.float64`` (or use ``from_numpy``) to keep it.
    """
    if array.dtype == float64:
        return DEFAULT_FLOAT
    if array.dtype.kind in "OUS":
        raise TypeError(f"tensor: cannot make a tensor from data of dtype {array.dtype}")
    return array.dtype
