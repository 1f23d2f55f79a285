"""Primitive op classes by family. Importing this package registers every op
as a Tensor method and an ``ember.<name>`` function."""

from ember.ops import arithmetic, conv, elementwise, index, pool, reduce, resample, shape  # noqa: F401
