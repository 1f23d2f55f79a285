"""TensorDataset, Subset, ConcatDataset, random_split, against torch.utils.data."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import ember
from ember.data import ConcatDataset, Dataset, Subset, TensorDataset, random_split

REPO = Path(__file__).resolve().parents[2]


def test_tensor_dataset_samples_match_torch():
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    y = np.arange(6)
    ours = TensorDataset(ember.tensor(x), y)  # arrays are accepted too
    theirs = tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    assert len(ours) == len(theirs) == 6
    for i in (0, 3, -1):
        a, b = ours[i], theirs[i]
        assert isinstance(a, tuple) and len(a) == 2
        np.testing.assert_array_equal(a[0].array, b[0].numpy())
        assert a[1].item() == b[1].item()


def test_tensor_dataset_refuses_mismatched_sizes():
    with pytest.raises(ValueError, match="Size mismatch between tensors"):
        TensorDataset(ember.zeros(3, 2), ember.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()


def test_subset_maps_indices():
    base = list(range(100, 110))
    sub = Subset(base, [9, 0, 4])
    assert len(sub) == 3 and [sub[i] for i in range(3)] == [109, 100, 104]
    assert sub[-1] == 104
    with pytest.raises(IndexError, match="Subset index 3 is out of range for length 3"):
        sub[3]


def test_concat_dataset_matches_torch_for_every_index():
    parts = [list(range(3)), list(range(10, 12)), [], list(range(20, 25))]
    ours, theirs = ConcatDataset(parts), tud.ConcatDataset(parts)
    assert len(ours) == len(theirs) == 10
    assert ours.cumulative_sizes == theirs.cumulative_sizes
    for i in range(-10, 10):
        assert ours[i] == theirs[i]
    with pytest.raises(IndexError, match="out of range"):
        ours[10]
    with pytest.raises(IndexError, match="out of range"):
        ours[-11]
    with pytest.raises(ValueError, match="empty"):
        ConcatDataset([])


def test_dataset_addition_concatenates():
    class Squares(Dataset):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return i * i

    both = Squares(3) + Squares(2)
    assert isinstance(both, ConcatDataset)
    assert [both[i] for i in range(len(both))] == [0, 1, 4, 0, 1]


@pytest.mark.parametrize("n,lengths", [(10, [3, 7]), (11, [0.3, 0.3, 0.4]), (10, [0.5, 0.5]),
                                       (7, [0.1, 0.9]), (100, [0.8, 0.1, 0.1]), (5, [5, 0])])
def test_random_split_lengths_match_torch(n, lengths):
    ours = random_split(list(range(n)), lengths, generator=np.random.default_rng(0))
    theirs = tud.random_split(list(range(n)), lengths, generator=torch.Generator().manual_seed(0))
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    items = [s[i] for s in ours for i in range(len(s))]
    assert sorted(items) == list(range(n))  # disjoint and covering


def test_random_split_is_seeded():
    def split(gen):
        return [list(s.indices) for s in random_split(list(range(30)), [10, 20], generator=gen)]
    assert split(np.random.default_rng(4)) == split(np.random.default_rng(4))
    assert split(np.random.default_rng(4)) != split(np.random.default_rng(5))
    ember.manual_seed(9)
    a = split(None)
    ember.manual_seed(9)
    assert split(None) == a


def test_random_split_refuses_bad_lengths():
    with pytest.raises(ValueError, match="Sum of input lengths does not equal"):
        random_split(list(range(5)), [2, 2])
    with pytest.raises(ValueError, match="non-negative integers or fractions"):
        random_split(list(range(5)), [6, -1])
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(list(range(3)), [0.9, 0.1])


def test_subset_of_random_split_slices_batches_from_its_dataset():
    ds = TensorDataset(np.arange(20) * 10)
    train, _ = random_split(ds, [0.75, 0.25], generator=np.random.default_rng(1))
    assert train.batchable
    (batch,) = train.get_batch(np.array([0, 2]))
    assert batch.tolist() == [train[0][0].item(), train[2][0].item()]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_ember_data_never_imports_ember_nn():
    # A static check: the ember package facade itself loads ember.nn, so sys.modules can't tell.
    files = list((REPO / "ember" / "data").rglob("*.py"))
    assert len(files) >= 6
    for path in files:
        bad = {m for m in imported_modules(path) if m == "ember.nn" or m.startswith("ember.nn.")}
        assert not bad, f"{path} imports {bad}"
