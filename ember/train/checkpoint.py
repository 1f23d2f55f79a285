"""Training checkpoints: one safetensors file that resumes training bit for bit.

It holds the model, optimizer and scheduler states, the epoch and step counters,
the History, the callbacks' states, and every random state that training draws
from: ember's generator, NumPy's global one, and the DataLoaders' generators. It
is written with ``ember.save`` (temp file + fsync + rename, so a crash leaves the
old file or the new one) and read with ``ember.load`` (safetensors + JSON: no code
runs). Every check happens before anything is changed, so a bad file leaves the
trainer as it was.

>>> trainer.save_checkpoint("runs/last.safetensors")
>>> trainer.load_checkpoint("runs/last.safetensors")  # or trainer.fit(10, resume_from=...)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

import ember
from ember.serialize import CheckpointError
from ember.train.history import History

__all__ = ["CHECKPOINT_KIND", "REQUIRED_KEYS", "checkpoint_state", "save_checkpoint",
           "read_checkpoint", "restore_checkpoint", "callback_states", "model_mismatch",
           "numpy_rng_state", "set_numpy_rng_state"]

CHECKPOINT_KIND = "ember.training_checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("kind", "model", "optimizer", "scheduler", "epoch", "step", "history", "rng")


# ---------------------------------------------------------------- random states
def numpy_rng_state() -> dict[str, Any]:
    """NumPy's global (legacy) generator state as plain JSON data."""
    state = np.random.get_state(legacy=False)
    state["state"] = {"key": state["state"]["key"].tolist(), "pos": int(state["state"]["pos"])}
    return state


def set_numpy_rng_state(state: Mapping[str, Any]) -> None:
    np.random.set_state({**state, "state": {"key": np.asarray(state["state"]["key"], np.uint32),
                                            "pos": int(state["state"]["pos"])}})


def _loader_rng_state(loader: Any) -> dict | None:
    return None if loader is None else loader.rng.bit_generator.state


def _rng_states(trainer: Any) -> dict[str, Any]:
    return {"ember": ember.get_rng_state(), "numpy": numpy_rng_state(),
            "train_loader": _loader_rng_state(trainer.train_loader),
            "val_loader": _loader_rng_state(trainer.val_loader)}


def _restore_rng(trainer: Any, states: Mapping[str, Any]) -> None:
    set_numpy_rng_state(states["numpy"])
    ember.set_rng_state(states["ember"])
    # A loader without its own generator draws from ember's: restored just above, and its
    # saved state is that same one, so setting it again changes nothing.
    for name in ("train_loader", "val_loader"):
        loader, state = getattr(trainer, name), states.get(name)
        if loader is not None and state is not None:
            loader.rng.bit_generator.state = state


# ---------------------------------------------------------------- writing
def _class_name(obj: Any) -> str | None:
    return None if obj is None else type(obj).__name__


def callback_states(callbacks: list) -> list[dict[str, Any]]:
    states = [(type(cb).__name__, cb.state_dict()) for cb in callbacks]
    return [{"class": name, "state": state} for name, state in states if state]


def checkpoint_state(trainer: Any) -> dict[str, Any]:
    """Everything a training checkpoint holds, as a dict ``ember.save`` can write."""
    scheduler = trainer.scheduler
    return {
        "kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": trainer.epoch, "step": trainer.step,
        "history": trainer.history.to_dict(),
        "rng": _rng_states(trainer),
        "callbacks": callback_states(trainer.callbacks),
        "classes": {"model": _class_name(trainer.model),
                    "optimizer": _class_name(trainer.optimizer),
                    "scheduler": _class_name(scheduler)},
    }


def save_checkpoint(trainer: Any, path: str | os.PathLike) -> None:
    """Write the trainer's full state to ``path`` atomically (its folder is created)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(folder, exist_ok=True)
    ember.save(checkpoint_state(trainer), path)


# ---------------------------------------------------------------- reading and checking
def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a training checkpoint; CheckpointError naming the path and the problem."""
    path = os.fspath(path)
    state = ember.load(path)  # CheckpointError for truncated / corrupted / non-safetensors
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (it holds a "
                              f"{type(state).__name__}, not a dict)")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        held = ", ".join(repr(k) for k in list(state)[:5]) + (" ..." if len(state) > 5 else "")
        raise CheckpointError(f"{path}: not a training checkpoint: missing {names} (it holds "
                              f"{held or 'nothing'}); a file of model weights loads with "
                              "model.load_state_dict(ember.load(path))")
    if state["kind"] != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a training checkpoint (kind {state['kind']!r}, "
                              f"expected {CHECKPOINT_KIND!r})")
    return state


def model_mismatch(saved: Mapping[str, Any], model: Any) -> str | None:
    """A description of how the saved weights differ from ``model``'s, or None."""
    own = model.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append("keys missing from the checkpoint: " + ", ".join(missing))
    if unexpected:
        parts.append("unexpected keys in the checkpoint: " + ", ".join(unexpected))
    if shapes:
        parts.append("shape mismatches: " + "; ".join(shapes))
    return "; ".join(parts) or None


def _check_part(path: str, what: str, saved_class: str | None, obj: Any) -> None:
    own = _class_name(obj)
    if saved_class != own:
        raise CheckpointError(f"{path}: the checkpoint's {what} is {saved_class or 'absent'} "
                              f"but the trainer's is {own or 'absent'}")


def _check_compatible(path: str, state: Mapping[str, Any], trainer: Any) -> None:
    problem = model_mismatch(state["model"], trainer.model)
    if problem:
        saved = state.get("classes", {}).get("model") or "model"
        raise CheckpointError(f"{path}: the checkpoint's {saved} does not match this "
                              f"{type(trainer.model).__name__} (a different architecture?): "
                              f"{problem}")
    classes = state.get("classes", {})
    _check_part(path, "optimizer", classes.get("optimizer"), trainer.optimizer)
    _check_part(path, "scheduler", classes.get("scheduler"), trainer.scheduler)
    saved_groups = state["optimizer"]["param_groups"]
    sizes = [len(g["params"]) for g in saved_groups]
    own = [len(g["params"]) for g in trainer.optimizer.param_groups]
    if sizes != own:
        raise CheckpointError(f"{path}: the checkpoint's optimizer has parameter groups of "
                              f"sizes {sizes}, the trainer's {own}")


def restore_checkpoint(trainer: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Check ``path`` against ``trainer``, then load every part into it; returns the state."""
    path = os.fspath(path)
    state = read_checkpoint(path)
    _check_compatible(path, state, trainer)
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.epoch, trainer.step = int(state["epoch"]), int(state["step"])
    trainer.history = History.from_dict(state["history"])
    _restore_rng(trainer, state["rng"])
    trainer._pending_callback_states = list(state.get("callbacks", []))
    return state
