"""ember.parallel: big copies and elementwise passes split between threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ember import blas, parallel


@pytest.fixture
def three_threads(monkeypatch):
    """Split everything, into three uneven blocks, whatever this machine's BLAS pool."""
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)


def test_rows_splits_matching_arrays_and_broadcasts_the_rest(three_threads):
    a = np.arange(7 * 4, dtype=np.float64).reshape(7, 4)
    bias = np.array([1.0, 2.0, 3.0, 4.0])  # lower rank: broadcast, not sliced
    row = np.full((1, 4), 10.0)            # length 1: broadcast, not sliced
    out = np.empty_like(a)
    seen = []

    def add(o, x, b, r):
        seen.append((threading.current_thread().name, o.shape[0]))
        np.add(x, b + r, out=o)

    parallel.rows(add, out, a, bias, row)
    np.testing.assert_array_equal(out, a + bias + row)
    assert sorted(n for _, n in seen) == [2, 2, 3]  # 7 rows in three blocks
    names = {name for name, _ in seen}  # the caller takes a block, the pool the rest
    assert threading.current_thread().name in names and len(names) >= 2


def test_small_work_or_disabled_runs_one_plain_call(monkeypatch):
    monkeypatch.setattr(parallel, "_enabled", True)
    calls = []
    parallel.rows(lambda o: calls.append(o.shape), np.empty((8, 8)))
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 2)
    previous = parallel.set_enabled(False)
    try:
        parallel.rows(lambda o: calls.append(o.shape), np.empty((8, 8)))
    finally:
        parallel.set_enabled(previous)
    assert calls == [(8, 8), (8, 8)]


def test_errors_in_a_worker_reach_the_caller(three_threads):
    def fail(o):
        if o.shape[0] == 3:  # the last block runs on a pool thread
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        parallel.rows(fail, np.empty((7, 2)))


def test_map_rows_returns_each_blocks_result_in_order(three_threads):
    a = np.arange(10.0)
    assert parallel.map_rows(lambda x: x.tolist(), a) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    parallel.set_enabled(False)
    try:
        assert parallel.map_rows(np.sum, a) == [45.0]
    finally:
        parallel.set_enabled(True)


def test_a_forked_child_gets_a_working_pool(three_threads):
    import os
    parallel.rows(np.copyto, np.empty((6, 2)), np.ones((6, 2)))  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # child: a pool whose threads did not survive the fork would hang here
        out = np.empty((6, 2))
        parallel.rows(np.copyto, out, np.ones((6, 2)))
        os._exit(0 if out.sum() == 12 else 1)
    import signal
    import time
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("parallel.rows hung in a forked child")


def test_on_by_default_unless_the_environment_turns_it_off(monkeypatch):
    import importlib
    monkeypatch.delenv("EMBER_PARALLEL", raising=False)
    assert importlib.reload(parallel)._enabled is True
    monkeypatch.setenv("EMBER_PARALLEL", "0")
    assert importlib.reload(parallel)._enabled is False
    monkeypatch.setenv("EMBER_PARALLEL", "1")
    assert importlib.reload(parallel)._enabled is True
    monkeypatch.delenv("EMBER_PARALLEL")
    importlib.reload(parallel)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_on_threads_runs_once_per_thread_sharing_one_iterator(threads):
    """on_threads: fn runs once on each thread (the first on the caller), and threads
    that take items from one shared iterator see every item exactly once."""
    items = iter(range(50))

    def take():
        name = threading.current_thread().name
        return name.startswith("ember-parallel"), [i for i in items]

    results = parallel.on_threads(take, threads)
    assert [pooled for pooled, _ in results] == [False] + [True] * (threads - 1)
    assert sorted(i for _, got in results for i in got) == list(range(50))


def test_starting_the_pool_keeps_mid_sized_products_on_one_blas_thread(three_threads,
                                                                      monkeypatch):
    """Two spinning pools fight for the cores (blas.MID_MNK): the first time ember's own
    threads start, mid-sized products go back to one BLAS thread."""
    monkeypatch.setattr(parallel, "_executor", None)
    monkeypatch.setattr(blas, "_own_threads_started", False)
    parallel.rows(lambda x: None, np.zeros((3, 1 << 20), np.float32))  # 12 MB: split
    assert blas._own_threads_started
