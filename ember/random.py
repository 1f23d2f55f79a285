"""ember's global random state: one seeded NumPy Generator.

``ember.manual_seed(s)`` makes every random draw in ember (initialisers, rand,
dropout, DataLoader shuffling without its own generator) repeat exactly.
"""

from __future__ import annotations

from typing import Any

from ember.backend import xp

_state: dict[str, Any] = {"rng": xp.random.default_rng()}


def manual_seed(seed: int) -> Any:
    """Seed ember's generator; returns it."""
    _state["rng"] = xp.random.default_rng(seed)
    return _state["rng"]


def generator() -> Any:
    """The generator that ember's random functions draw from."""
    return _state["rng"]


def get_rng_state() -> dict:
    """A JSON-friendly snapshot of the generator (for checkpoints)."""
    return _state["rng"].bit_generator.state


def set_rng_state(state: dict) -> None:
    rng = xp.random.default_rng()
    rng.bit_generator.state = state
    _state["rng"] = rng
