"""Functional forms of ember's ops (``import ember.nn.functional as F``).

Every registered op is here under its own name (``F.relu``, ``F.softmax``,
``F.pad``...), so the functional and method forms are one implementation.
"""

from ember.autograd import FUNCTIONS

globals().update(FUNCTIONS)

__all__ = sorted(FUNCTIONS)
