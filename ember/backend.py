"""The one place ember names its array library.

Every op reaches NumPy through ``xp`` so that a NumPy-compatible GPU library
(CuPy) can stand in later without touching the ops.
"""

import numpy as xp

__all__ = ["xp"]
