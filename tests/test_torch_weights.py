"""ember.load_torch_state_dict: torch.save files read without torch, safely."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import ember
from ember.torch_compat import TorchFileError, UnsafeTorchFileError, load_torch_state_dict
from tests import torch_twins

one_torch_thread = pytest.fixture(autouse=True)(torch_twins.one_thread)

REPO = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter where torch cannot be imported at all.
NO_TORCH_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import numpy as np
    import ember
    from ember.torch_compat import load_torch_state_dict
    state = load_torch_state_dict(sys.argv[1])
    model = ember.models.lenet5()
    print(model.load_state_dict(state))
    model.eval()
    with ember.no_grad():
        out = model(ember.tensor(np.load(sys.argv[2]))).array
    np.testing.assert_allclose(out, np.load(sys.argv[3]), rtol=1e-5, atol=1e-5)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch unavailable; outputs match")
""")


def test_torch_lenet5_loads_into_ember_without_torch(tmp_path):
    torch.manual_seed(0)
    model = torch_twins.train_one_step(torch_twins.lenet5(), (8, 1, 28, 28))
    torch.save(model.state_dict(), tmp_path / "lenet5.pt")
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = model(x).numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "expected.npy", expected)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, str(tmp_path / "lenet5.pt"),
                          str(tmp_path / "x.npy"), str(tmp_path / "expected.npy")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "<All keys matched successfully>" in run.stdout
    assert "torch unavailable; outputs match" in run.stdout


def test_cifar_cnn_with_batch_norm_buffers_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = torch_twins.train_one_step(torch_twins.cifar_cnn(width=8), (4, 3, 32, 32))
    torch.save(model.state_dict(), tmp_path / "cnn.pth")
    state = load_torch_state_dict(tmp_path / "cnn.pth")
    assert state["1.num_batches_tracked"].dtype == ember.int64
    twin = ember.models.build("cifar_cnn", width=8)
    twin.load_state_dict(state)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(), ember.no_grad():
        np.testing.assert_allclose(twin.eval()(ember.tensor(x.numpy())).array, model(x).numpy(),
                                   rtol=1e-5, atol=1e-5)


def test_dtypes_strides_offsets_and_nesting_are_honoured(tmp_path):
    base = torch.arange(24, dtype=torch.float64)
    tensors = {
        "f32": torch.randn(2, 3), "f64": torch.randn(3, dtype=torch.float64),
        "f16": torch.randn(4).half(), "bf16": torch.randn(4).bfloat16(),
        "i64": torch.tensor([1, -2]), "i32": torch.tensor([3], dtype=torch.int32),
        "i16": torch.tensor([4], dtype=torch.int16), "i8": torch.tensor([-5], dtype=torch.int8),
        "u8": torch.tensor([250], dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3),
        "transposed": base[:12].reshape(3, 4).t(), "offset_slice": base[5:17:3],
        "shared_view": base.reshape(4, 6)[1:, 2:4], "param": torch.nn.Parameter(torch.ones(2)),
    }
    torch.save({"model": tensors, "epoch": 3, "names": ["a", "b"], "lr": (0.1, None)},
               tmp_path / "ckpt.pt")
    loaded = load_torch_state_dict(tmp_path / "ckpt.pt")
    assert loaded["epoch"] == 3 and loaded["names"] == ["a", "b"] and loaded["lr"] == (0.1, None)
    for name, t in tensors.items():
        got = loaded["model"][name]
        assert isinstance(got, ember.Tensor) and not got.requires_grad
        want = t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
        assert got.array.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got.array, want, err_msg=name)


def _fake_torch_zip(path, payload: bytes, storages=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)


class _Evil:
    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("call", ["os.system", "builtins.eval", "subprocess.call"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, call):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    if call == "os.system":
        payload = _Evil(os.system, (command,))
    elif call == "builtins.eval":
        payload = _Evil(eval, (f"open({str(marker)!r}, 'w')",))
    else:
        payload = _Evil(subprocess.call, (["touch", str(marker)],))
    _fake_torch_zip(tmp_path / "evil.pt", pickle.dumps({"weight": payload}, protocol=2))
    with pytest.raises(UnsafeTorchFileError, match="refused to unpickle .*Nothing from it was run"):
        load_torch_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def _crafted_record(offset: int, size: tuple, stride: tuple) -> bytes:
    """A pickle of {'w': tensor record} as torch writes it, with chosen geometry, over a
    4-element float storage."""
    class Storage:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", 4)
            return None

    class Record:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (Storage(), offset, size, stride, False,
                                                     collections.OrderedDict())

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": Record()})
    return buffer.getvalue()


@pytest.mark.parametrize("offset, size, stride", [(2, (3,), (1,)), (0, (2, 2), (4, 1)),
                                                  (0, (2,), (-1,))])
def test_crafted_tensor_records_cannot_read_outside_their_storage(tmp_path, offset, size, stride):
    storage = {"0": np.arange(4, dtype=np.float32).tobytes()}
    _fake_torch_zip(tmp_path / "ok.pt", _crafted_record(1, (3,), (1,)), storage)
    np.testing.assert_array_equal(load_torch_state_dict(tmp_path / "ok.pt")["w"].array, [1, 2, 3])
    _fake_torch_zip(tmp_path / "bad.pt", _crafted_record(offset, size, stride), storage)
    with pytest.raises(TorchFileError, match="reads past its storage|malformed"):
        load_torch_state_dict(tmp_path / "bad.pt")


def test_other_files_raise_clear_errors(tmp_path):
    with pytest.raises(TorchFileError, match="no such file"):
        load_torch_state_dict(tmp_path / "missing.pt")
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"w": [1.0]}))
    with pytest.raises(TorchFileError, match="not a zip archive"):
        load_torch_state_dict(tmp_path / "legacy.pt")
    torch.save({"w": torch.ones(3)}, tmp_path / "cut.pt")
    data = (tmp_path / "cut.pt").read_bytes()
    with zipfile.ZipFile(tmp_path / "cut.pt") as z:
        names = z.namelist()
    with zipfile.ZipFile(tmp_path / "nostorage.pt", "w") as z, \
            zipfile.ZipFile(tmp_path / "cut.pt") as src:
        for name in names:
            if "/data/" not in name:
                z.writestr(name, src.read(name))
    assert data
    with pytest.raises(TorchFileError, match="missing from the archive"):
        load_torch_state_dict(tmp_path / "nostorage.pt")
