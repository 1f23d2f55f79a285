"""History: what ``Trainer.fit`` returns, one value per epoch for every logged quantity.

>>> h = History()
>>> h.append(0, {"train_loss": 0.5, "lr": 0.1})
>>> h.append(1, {"train_loss": 0.25, "lr": 0.1})
>>> h.history["train_loss"], h.epoch
([0.5, 0.25], [0, 1])
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["History"]


def _plain(value: Any) -> Any:
    """A JSON value: NumPy scalars and 0-d arrays become Python numbers."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


class History:
    """Per-epoch logs, like Keras's: ``history.history`` maps each key (``train_loss``,
    ``val_accuracy``, ``lr``, ...) to a list with one value per epoch, and
    ``history.epoch`` lists the (0-based) epoch numbers. Plain Python numbers only,
    so ``json.dumps(history.to_dict())`` works (non-finite values are written as
    NaN/Infinity, as Python's json does)."""

    def __init__(self, history: Mapping[str, list] | None = None,
                 epoch: list[int] | None = None) -> None:
        self.history: dict[str, list] = {k: list(v) for k, v in (history or {}).items()}
        self.epoch: list[int] = list(epoch or [])

    def append(self, epoch: int, logs: Mapping[str, Any]) -> None:
        """Record one epoch's logs; a key first seen late is padded with NaN before it."""
        for key, value in logs.items():
            column = self.history.setdefault(key, [math.nan] * len(self.epoch))
            column.append(_plain(value))
        for key, column in self.history.items():
            if key not in logs:
                column.append(math.nan)
        self.epoch.append(int(epoch))

    def __getitem__(self, key: str) -> list:
        if key not in self.history:
            raise KeyError(f"History has no {key!r}; it holds {sorted(self.history)}")
        return self.history[key]

    def __contains__(self, key: object) -> bool:
        return key in self.history

    def __len__(self) -> int:
        return len(self.epoch)

    def last(self) -> dict[str, Any]:
        """The last epoch's logs."""
        return {key: column[-1] for key, column in self.history.items()} if self.epoch else {}

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": list(self.epoch), "history": {k: list(v) for k, v in
                                                       self.history.items()}}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> History:
        return cls(state.get("history", {}), state.get("epoch", []))

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.to_json() == other.to_json()  # NaN == NaN here, as a record should

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"
