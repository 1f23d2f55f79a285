"""Training checkpoints: a SIGKILLed run resumes bit-identically; bad files are refused.

The resume test runs three processes on 2,000 images of the packaged MNIST sample
with shuffling (the loaders' own generators), dropout (ember's generator) and input
noise (NumPy's global generator), so every saved random state matters:
(a) 4 epochs straight; (b) the same run, killed with SIGKILL right after the epoch-2
checkpoint is written; (c) a new process resuming from that checkpoint for 2 more.
(a) and (c) must end with the same weights and history, bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import DataLoader, TensorDataset
from ember.optim.lr_scheduler import StepLR
from ember.train import EarlyStopping, Trainer, read_checkpoint
from ember.train.checkpoint import numpy_rng_state, set_numpy_rng_state

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import os, signal, sys, json
    import numpy as np
    import ember, ember.nn as nn, ember.nn.functional as F
    from ember.data import DataLoader, Subset
    from ember.data.datasets import MNIST
    from ember.data.transforms import Compose, Lambda, Normalize, ToTensor
    from ember.train import Callback, EarlyStopping, ModelCheckpoint, Trainer

    mode, folder = sys.argv[1], sys.argv[2]
    ember.manual_seed(0)
    np.random.seed(0)
    noise = Lambda(lambda x: x + np.random.normal(0, 0.05, x.shape).astype(np.float32),
                   batched=True)  # draws from NumPy's global generator
    mnist = MNIST(sample=True, transform=Compose([ToTensor(), Normalize((0.1307,), (0.3081,)),
                                                  noise]))
    train = DataLoader(Subset(mnist, np.arange(2000)), batch_size=100, shuffle=True,
                       generator=np.random.default_rng(1))
    val = DataLoader(Subset(mnist, np.arange(2000, 2500)), batch_size=250,
                     generator=np.random.default_rng(2))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(64, 10))
    opt = ember.optim.Adam(model.parameters(), lr=2e-3)
    sched = ember.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

    class KillAfterEpoch2(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    checkpoint = os.path.join(folder, "last.safetensors")
    callbacks = [EarlyStopping(patience=10), ModelCheckpoint(checkpoint)]
    if mode == "killed":
        callbacks.append(KillAfterEpoch2())
    trainer = Trainer(model, F.cross_entropy, opt, sched, train, val, callbacks=callbacks,
                      verbose=0)
    history = trainer.fit(4, resume_from=checkpoint if mode == "resume" else None)
    ember.save(model.state_dict(), os.path.join(folder, "weights.safetensors"))
    with open(os.path.join(folder, "history.json"), "w") as f:
        json.dump(history.to_dict(), f)
''')


def _run(script: Path, mode: str, folder: Path) -> subprocess.CompletedProcess:
    folder.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(script), mode, str(folder)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_sigkilled_run_resumes_bit_identically(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    straight = _run(script, "straight", tmp_path / "a")
    assert straight.returncode == 0, straight.stderr
    killed = _run(script, "killed", tmp_path / "b")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert read_checkpoint(tmp_path / "b" / "last.safetensors")["epoch"] == 2
    assert not (tmp_path / "b" / "weights.safetensors").exists()
    resumed = _run(script, "resume", tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr

    a = ember.load(tmp_path / "a" / "weights.safetensors")
    b = ember.load(tmp_path / "b" / "weights.safetensors")
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key].array, b[key].array, err_msg=key)
    history_a = json.loads((tmp_path / "a" / "history.json").read_text())
    history_b = json.loads((tmp_path / "b" / "history.json").read_text())
    assert history_a == history_b and history_a["epoch"] == [0, 1, 2, 3]
    assert history_a["history"]["lr"] == pytest.approx([2e-3, 1.4e-3, 9.8e-4, 6.86e-4])


# ---------------------------------------------------------------- in-process round trips
def _trainer(hidden=8, scheduler=True, optimizer="adam", seed=0):
    ember.manual_seed(seed)  # the weights' seed; the data is always the same
    rng = np.random.default_rng(0)
    x = ember.tensor(rng.normal(size=(48, 4)).astype(np.float32))
    y = ember.tensor((rng.normal(size=48) > 0).astype(np.int64))
    model = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 2))
    opt = (ember.optim.Adam if optimizer == "adam" else ember.optim.SGD)(model.parameters(),
                                                                          lr=0.01)
    sched = StepLR(opt, 1, 0.5) if scheduler else None
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    return Trainer(model, F.cross_entropy, opt, sched, loader, callbacks=[
        EarlyStopping(monitor="train_loss", patience=5)], verbose=0)


def test_checkpoint_round_trip_restores_everything(tmp_path):
    trainer = _trainer()
    trainer.fit(2)
    np.random.seed(5)
    path = tmp_path / "sub" / "ckpt.safetensors"
    trainer.save_checkpoint(path)
    expected_next = trainer.fit(3).history["train_loss"][-1]
    numpy_draw = np.random.random()

    fresh = _trainer(seed=9)
    np.random.seed(123)
    fresh.load_checkpoint(path)
    assert fresh.epoch == 2 and fresh.step == 6 and fresh.history.epoch == [0, 1]
    assert fresh.scheduler.get_last_lr() == [0.0025]
    assert fresh.fit(3).history["train_loss"][-1] == expected_next
    assert np.random.random() == numpy_draw
    assert fresh.callbacks[0].best == trainer.callbacks[0].best


def test_numpy_state_is_json_and_round_trips():
    np.random.seed(3)
    np.random.normal()  # leaves a cached gaussian in the state
    state = numpy_rng_state()
    json.dumps(state)
    expected = np.random.normal(size=3)
    np.random.seed(0)
    set_numpy_rng_state(json.loads(json.dumps(state)))
    np.testing.assert_array_equal(np.random.normal(size=3), expected)


@pytest.fixture
def saved(tmp_path):
    trainer = _trainer()
    trainer.fit(1)
    path = tmp_path / "ckpt.safetensors"
    trainer.save_checkpoint(path)
    return path


def test_truncated_and_corrupted_files_raise_checkpoint_error(saved, tmp_path):
    data = saved.read_bytes()
    cases = {"truncated.safetensors": data[: len(data) // 2], "tiny.safetensors": data[:5],
             "garbage.safetensors": b"\x00" * 64, "empty.safetensors": b""}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ember.CheckpointError, match=name):
            _trainer().load_checkpoint(path)
    with pytest.raises(ember.CheckpointError, match="no such file"):
        _trainer().load_checkpoint(tmp_path / "missing.safetensors")


def test_a_file_of_another_kind_names_what_is_missing(tmp_path):
    trainer = _trainer()
    weights = tmp_path / "weights.safetensors"
    ember.save(trainer.model.state_dict(), weights)
    with pytest.raises(ember.CheckpointError, match=r"weights.safetensors: not a training "
                       r"checkpoint: missing .*'optimizer'"):
        trainer.load_checkpoint(weights)
    other = tmp_path / "other.safetensors"
    ember.save({"kind": "something", "model": {}, "optimizer": {}, "scheduler": None,
                "epoch": 0, "step": 0, "history": {}, "rng": {}}, other)
    with pytest.raises(ember.CheckpointError, match="kind 'something'"):
        trainer.load_checkpoint(other)


def test_different_architecture_names_the_mismatched_keys(saved):
    wide = _trainer(hidden=16)
    before = {k: v.array.copy() for k, v in wide.model.state_dict().items()}
    with pytest.raises(ember.CheckpointError, match=r"shape mismatches: 0\.weight: checkpoint "
                       r"\(8, 4\) vs model \(16, 4\)"):
        wide.load_checkpoint(saved)
    for key, value in wide.model.state_dict().items():  # nothing was changed
        np.testing.assert_array_equal(value.array, before[key])
    assert wide.epoch == 0

    deeper = _trainer()
    deeper.model.add_module("4", nn.Linear(2, 2))
    with pytest.raises(ember.CheckpointError, match=r"keys missing from the checkpoint: "
                       r"4\.weight, 4\.bias"):
        deeper.load_checkpoint(saved)
    shallow = _trainer()
    del shallow.model._modules["3"]
    with pytest.raises(ember.CheckpointError, match=r"unexpected keys in the checkpoint: "
                       r"3\.weight, 3\.bias"):
        shallow.load_checkpoint(saved)


def test_different_optimizer_or_scheduler_is_refused(saved):
    with pytest.raises(ember.CheckpointError, match="optimizer is Adam but the trainer's is SGD"):
        _trainer(optimizer="sgd").load_checkpoint(saved)
    with pytest.raises(ember.CheckpointError, match="scheduler is StepLR but the trainer's is "
                       "absent"):
        _trainer(scheduler=False).load_checkpoint(saved)
