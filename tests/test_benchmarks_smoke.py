"""The benchmark suite: ``python -m benchmarks.run --quick`` produces every table with
every column and sane numbers (no timing assertions), and the pieces it relies on
are correct: the NumPy reference trains exactly like torch, the torch twins match
ember's models, and every framework sees the same batches."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ember
from benchmarks import models_torch, numpy_reference, training
from benchmarks.micro import MICRO
from benchmarks.report import TRAINING_COLUMNS

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text()


def table(text: str, section: str) -> list[dict]:
    """The rows of the Markdown table under ``## section`` as dicts."""
    lines = text.split(f"## {section}", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    assert all(len(r) == len(header) for r in body)
    return [dict(zip(header, r)) for r in body]


def number(cell: str) -> float:
    value = float(cell)
    assert math.isfinite(value)
    return value


def test_training_table_has_every_case_and_column(quick_report):
    rows = table(quick_report, "Training")
    assert list(rows[0]) == TRAINING_COLUMNS
    expected = [(c.batch, name) for c in training.CASES for name in
                ["ember"] + [f"ember ({w} workers)" for w in c.ember_workers if w]]
    assert [(int(r["batch"]), r["run"]) for r in rows] == expected


def test_training_numbers_are_sane(quick_report):
    for row in table(quick_report, "Training"):
        ember_s, torch_s = number(row["ember s/epoch"]), number(row["torch s/epoch"])
        assert ember_s > 0 and torch_s > 0
        assert number(row["ember/torch"]) == pytest.approx(ember_s / torch_s, rel=0.02)
        for col in ("ember MB", "torch MB"):
            assert number(row[col]) >= 0
        for col in ("acc ember", "acc torch"):
            assert 0 <= number(row[col]) <= 1
        assert number(row["GFLOP/epoch"]) > 0 and number(row["% peak ember"]) > 0
        if row["numpy s/epoch"] != "-":   # the NumPy reference exists for MLPs and LeNet-5
            assert number(row["ember/numpy"]) == pytest.approx(
                ember_s / number(row["numpy s/epoch"]), rel=0.02)
            assert 0 <= number(row["acc numpy"]) <= 1


def test_inference_micro_and_target_tables(quick_report):
    (infer,) = table(quick_report, "Inference")
    assert all(number(infer[f"{n} images/s"]) > 0 for n in ("ember", "torch", "numpy"))
    micro = table(quick_report, "Microbenchmarks")
    assert [r["benchmark"] for r in micro] == list(MICRO)
    assert all(number(r["ember µs"]) > 0 and number(r["torch µs"]) > 0 for r in micro)
    targets = table(quick_report, "Targets")
    assert {r["status"] for r in targets} <= {"met", "MISSED"}
    assert any(r["target"].startswith("per-op overhead") for r in targets)


def test_header_names_threads_peak_and_data(quick_report):
    assert "thread(s) for every framework" in quick_report
    assert "GEMM peak measured in this run" in quick_report
    assert "- Data: MNIST" in quick_report
    assert "- NumPy's BLAS (ember's and the NumPy reference's products): " in quick_report
    assert "- ember's AVX-512 products for convolutions (ember/ops/simd.py): " in quick_report
    assert "- ember's direct convolutions (ember/ops/simd_conv.py): " in quick_report


@pytest.mark.parametrize("on", [True, False])
def test_header_says_whether_the_simd_products_ran(monkeypatch, on):
    from benchmarks import run
    from ember.ops import simd
    monkeypatch.setattr(simd, "wanted", lambda: on)
    assert run.simd_in_use().startswith("on (" if on else "off (")


@pytest.mark.parametrize("on", [True, False])
def test_header_says_whether_the_direct_convolutions_ran(monkeypatch, on):
    from benchmarks import run
    from ember.ops import simd
    previous = simd.set_wanted(on)
    try:
        assert run.direct_in_use().startswith("on (" if on else "off (")
    finally:
        simd.set_wanted(previous)


def test_blas_summary_names_the_kernels_and_what_forced_them(monkeypatch):
    """The header says which OpenBLAS kernels ran, and when the environment chose them
    below what the CPU can run (OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU)."""
    from benchmarks import measure
    blas = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.31",
            "architecture": "Haswell"}
    monkeypatch.setattr("threadpoolctl.threadpool_info", lambda: [blas])
    monkeypatch.setattr(measure, "_cpu_fields", lambda: {"flags": "fma avx2 avx512f"})
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert measure.blas_summary() == (
        "openblas 0.3.31, Haswell kernels (set in the environment: OPENBLAS_CORETYPE=Haswell);"
        " this CPU has AVX-512, which these kernels do not use")
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    blas["architecture"] = "SkylakeX"
    assert measure.blas_summary() == "openblas 0.3.31, SkylakeX kernels"


# ---------------------------------------------------------------- the pieces
def one_step_grads_agree(torch_model, reference, x, y, loss):
    out = torch_model(torch.from_numpy(x))
    if loss == "mse":
        value = torch.nn.functional.mse_loss(out, torch.nn.functional.one_hot(
            torch.from_numpy(y), 10).float())
    else:
        value = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
    value.backward()
    ref_loss, g = numpy_reference.LOSSES[loss](reference.forward(x, keep=True), y)
    reference.backward(g)
    assert ref_loss == pytest.approx(value.item(), rel=1e-5)
    for mine, p in zip(reference.torch_layout_grads(), torch_model.parameters()):
        np.testing.assert_allclose(mine, p.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sizes, act, loss", [((784, 30, 10), "sigmoid", "mse"),
                                              ((784, 20, 20, 10), "tanh", "cross_entropy"),
                                              ((784, 20, 10), "relu", "cross_entropy")])
def test_numpy_mlp_gradients_equal_torch(sizes, act, loss):
    torch.manual_seed(0)
    model = models_torch.mlp(sizes, act)
    w = [p.detach().numpy().copy() for p in model.parameters()]
    ref = numpy_reference.NumpyMLP(list(zip(w[0::2], w[1::2])), act, loss)
    rng = np.random.default_rng(0)
    one_step_grads_agree(model, ref, rng.standard_normal((8, 784), dtype=np.float32),
                         rng.integers(0, 10, 8), loss)


def test_numpy_lenet5_gradients_equal_torch():
    torch.manual_seed(0)
    model = models_torch.lenet5()
    ref = numpy_reference.NumpyLeNet5([p.detach().numpy() for p in model.parameters()])
    rng = np.random.default_rng(1)
    one_step_grads_agree(model, ref, rng.standard_normal((6, 1, 28, 28), dtype=np.float32),
                         rng.integers(0, 10, 6), "cross_entropy")


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_numpy_optimizers_equal_torch(opt):
    rng = np.random.default_rng(2)
    start = rng.standard_normal(50).astype(np.float32)
    param = torch.tensor(start, requires_grad=True)
    flat = numpy_reference.FlatParams([start])
    kwargs = {"sgd": {"lr": 0.1}, "momentum": {"lr": 0.1, "momentum": 0.9},
              "adam": {"lr": 0.01}}[opt]
    torch_opt = (torch.optim.Adam if opt == "adam" else torch.optim.SGD)([param], **kwargs)
    ref_opt = (numpy_reference.Adam if opt == "adam" else numpy_reference.SGD)(flat, **kwargs)
    for _ in range(5):
        g = rng.standard_normal(50).astype(np.float32)
        param.grad = torch.from_numpy(g.copy())
        torch_opt.step()
        flat.grad[...] = g
        ref_opt.step()
    np.testing.assert_allclose(flat.flat, param.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kwargs, shape", [("mlp", {"sizes": (784, 16, 10)}, (1, 28, 28)),
                                                 ("lenet5", {}, (1, 28, 28)),
                                                 ("cifar_cnn", {"width": 4}, (3, 32, 32))])
def test_torch_twins_compute_what_ember_models_compute(name, kwargs, shape):
    torch.manual_seed(0)
    twin = models_torch.TWINS[name](**kwargs)
    model = ember.models.build(name, **kwargs)
    models_torch.copy_into_ember(twin, model)
    x = np.random.default_rng(3).standard_normal((4,) + shape, dtype=np.float32)
    np.testing.assert_allclose(model(ember.from_numpy(x)).array,
                               twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_every_framework_gets_the_same_batches():
    """ember's DataLoader draws the epoch's order from the generator it is given;
    torch and NumPy use ``epoch_order`` with the same seed."""
    data = training.load_data("mnist", None, 100, 10)
    case = training.CASES[1]
    runner = training.EmberRunner(case, data, training.build_torch_model(case))
    runner.loader.generator = np.random.default_rng(7)
    order = training.epoch_order(7, 100)
    batches = [y.array for _, y in runner.loader]
    np.testing.assert_array_equal(np.concatenate(batches), data.train_labels[order])
    x, _ = next(iter(runner.loader.__class__(runner.loader.dataset, batch_size=5)))
    np.testing.assert_array_equal(x.array, data.normalise(data.train_images[:5]))


def test_thread_limits_are_put_back_exactly_even_when_nested():
    """Session 3 found the GEMM-peak measurement's inner one-thread block leaving torch
    on one thread for the rest of the run (so torch was timed on 1 thread, ember on 2)."""
    from threadpoolctl import threadpool_info

    from benchmarks.measure import limit_threads

    def pools() -> dict:
        return {p["internal_api"]: p["num_threads"] for p in threadpool_info()}

    before = torch.get_num_threads()
    with limit_threads(2):
        with limit_threads(1):
            assert torch.get_num_threads() == 1 and set(pools().values()) == {1}
        assert torch.get_num_threads() == 2 and set(pools().values()) == {2}
    assert torch.get_num_threads() == before


def test_every_timed_stretch_starts_after_a_settle_pause(monkeypatch):
    """Session 21 found torch timed while OpenBLAS's idle worker, left spinning by the
    framework before it, shared its second core: epochs, slices, micro batches and
    single timings each begin with ``measure.settle()`` now."""
    import time

    from benchmarks import measure, micro, run
    events: list = []
    monkeypatch.setattr(measure, "settle", lambda: events.append("settle"))
    monkeypatch.setattr(measure, "release_free_memory", lambda: None)

    class Runner:
        name = "r"

        def train_epoch(self, seed, limit):
            events.append("epoch")

    run._epoch(Runner(), 1, None, None)
    measure.timed(lambda: events.append("call"))
    micro._per_call(lambda: events.append("call"), 2, warm=0.0)
    assert events == ["settle", "epoch", "settle", "call", "settle", "call", "call"]
    events.clear()  # a micro round's untimed warm calls come after its pause
    assert micro._per_call(lambda: events.append("call") or time.sleep(0.002), 2,
                           warm=0.01) >= 0.002
    assert events[0] == "settle" and events.count("call") >= 2 + 3


def test_settle_outlasts_openblas_spinning_after_a_product():
    """The premise of the pause: after a two-thread product OpenBLAS's worker burns CPU
    for a while (process CPU time rises while the main thread sleeps); after
    ``settle()`` it is asleep. CPU time, not wall time: no timing assertion."""
    import time

    from benchmarks import measure
    from ember import blas
    if blas.get_num_threads() < 2:
        pytest.skip("OpenBLAS runs on one thread here: nothing spins")
    a = np.ones((1024, 1024), np.float32)

    def cpu_while_sleeping() -> float:
        start = time.process_time()
        time.sleep(0.05)
        return time.process_time() - start
    _ = a @ a  # the worker now spins
    spinning = cpu_while_sleeping()
    _ = a @ a
    measure.settle()
    assert spinning > 0.01 and cpu_while_sleeping() < 0.005


# ---------------------------------------------------------------- trajectories
def test_quick_report_has_the_trajectory_table_and_targets(quick_report):
    rows = table(quick_report, "Float32 trajectories")
    assert [r["case"].split(" (")[0] for r in rows] == ["CIFAR-10 CNN"]
    assert number(rows[0]["float64 ember vs torch"]) < 1e-9
    targets = [r["target"] for r in table(quick_report, "Targets")]
    assert any("float32 drift ember-torch / torch-torch" in t for t in targets)


def test_trajectory_check_sees_the_same_arithmetic_and_a_different_one(monkeypatch):
    from benchmarks import trajectory
    case = training.CASES[-1]
    case = dataclasses.replace(case, model_kwargs={"width": 2}, batch=8)
    data = training.load_data("cifar10", None, 32, 8)
    same = trajectory.trajectory_check(case, data, steps=3, threads=2)
    assert same.steps == 3 and same.threads == (2, 1)
    assert same.ember_torch_64 < 1e-12  # float64: identical arithmetic up to rounding
    assert 0 < same.ember_torch_32 < 1e-3 and 0 <= same.torch_torch_32 < 1e-3
    real_sgd = ember.optim.SGD  # ember with a slightly different learning rate: seen
    monkeypatch.setattr(ember.optim, "SGD", lambda params, lr, **kw: real_sgd(
        params, lr=lr * 1.001, **kw))
    assert trajectory.trajectory_check(case, data, steps=3, threads=2).ember_torch_64 > 1e-7


def test_rss_sampler_sees_a_rise_and_sleeps_between_tracked_stretches():
    """The sampler measures a 64 MB allocation inside track(); outside it, its thread
    waits on an event (timed epochs run untracked: its wake-ups slowed torch)."""
    import gc
    import time

    import numpy as np

    from benchmarks.measure import RssSampler, release_free_memory
    sampler = RssSampler(interval=0.001)
    # as the benchmark does before a tracked epoch: earlier tests' garbage freed, and the
    # freed heap given back (ember's malloc tuning keeps big blocks in the heap, where a
    # new 64 MB array reused 36 MB still resident and rose by 28)
    gc.collect()
    release_free_memory()
    with sampler.track() as grown:
        block = np.ones(16 << 20, np.float32)  # 64 MB, touched
        time.sleep(0.3)  # the sampler's thread gets the GIL and a core on a busy machine too
    assert grown[0] >= 48 << 20
    del block
    assert not sampler.active.is_set()
    peak = sampler.peak
    time.sleep(0.02)
    assert sampler.peak == peak  # nothing sampled while not tracking


# ---------------------------------------------------------------- accuracy noise
def test_quick_report_limits_the_cifar_accuracy_gap_by_float32_variants(quick_report):
    targets = {r["target"]: r for r in table(quick_report, "Targets")}
    cifar = [t for t in targets if t.startswith("CIFAR-10 CNN") and "accuracy gap" in t]
    assert len(cifar) == 1 and "means of 4 and 4 float32 variants" in cifar[0]
    mnist = [t for t in targets if "accuracy gap" in t and not t.startswith("CIFAR")]
    assert mnist and not any("variants" in t for t in mnist)  # sampling noise only
    rows = table(quick_report, "Accuracy of float32 variants")
    assert [(r["framework"], r["variant"]) for r in rows] == [
        (framework, variant) for framework in ("ember", "torch") for variant in
        ("as timed", "start nudged (1)", "start nudged (2)", "start nudged (3)")]
    assert all(0 <= number(r["test accuracy"]) <= 1 for r in rows)


def test_accuracy_noise_is_the_larger_of_sampling_and_the_variants_t_test():
    from benchmarks import report
    stats = {"torch": report.RunStats(accuracy=0.64), "ember": report.RunStats(accuracy=0.60)}
    res = report.CaseResult(training.CASES[-1], stats, 1, 100, 10000)
    sampling = 2 * (2 * 0.64 * 0.36 / 10000) ** 0.5
    assert math.isnan(res.variant_noise)  # no variants trained
    assert res.accuracy_noise == pytest.approx(sampling)
    assert res.accuracy_gap == pytest.approx(0.04)
    res.variant_accuracies = {"ember": {"a": 0.62, "b": 0.61}, "torch": {"c": 0.62, "d": 0.63}}
    e, t = [0.60, 0.62, 0.61], [0.64, 0.62, 0.63]  # means 0.61 and 0.63
    pooled = (sum((a - 0.61) ** 2 for a in e) + sum((a - 0.63) ** 2 for a in t)) / 4
    limit = 2.776 * (pooled * (1 / 3 + 1 / 3)) ** 0.5  # t(0.975, 4 degrees of freedom)
    assert res.accuracy_gap == pytest.approx(0.02)
    assert res.variant_noise == pytest.approx(limit)
    assert res.accuracy_noise == pytest.approx(max(limit, sampling))
    res.variant_accuracies = {"ember": {"a": 0.6}, "torch": {"c": 0.64}}  # no spread at all
    assert res.variant_noise == 0 and res.accuracy_noise == pytest.approx(sampling)


def test_the_paused_collector_row_times_with_gc_off_and_turns_it_back_on():
    import gc

    from benchmarks import micro
    seen = []
    micro._per_call(lambda: seen.append(gc.isenabled()), 3, pause_gc=True, warm=0.0)
    assert seen == [False] * 3 and gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        micro._per_call(lambda: 1 / 0, 1, pause_gc=True, warm=0.0)
    assert gc.isenabled()
    micro._per_call(lambda: seen.append(gc.isenabled()), 1, warm=0.0)
    assert seen[-1]  # the other rows time with the collector as the process has it
    assert micro.PER_OP_NO_GC in micro.MICRO and micro.PER_OP in micro.MICRO


def test_only_the_collector_on_row_decides_the_per_op_target(quick_report):
    targets = [r for r in table(quick_report, "Targets") if r["target"].startswith("per-op")]
    micro = {r["benchmark"]: r for r in table(quick_report, "Microbenchmarks")}
    from benchmarks.micro import PER_OP
    assert len(targets) == 1
    assert targets[0]["measured"] == micro[PER_OP]["ember/torch"]


@pytest.mark.parametrize("slices", [3, 10])  # 10: more slices than the epoch's 7 batches
def test_a_sliced_epoch_trains_exactly_what_a_whole_epoch_trains(slices):
    """A one-epoch case is timed in slices, the frameworks taking turns (benchmarks/run.py,
    ``_sliced_epoch``): each must still train on every batch of the epoch, in order."""
    from benchmarks import run
    data = training.load_data("mnist", None, 100, 10)
    case = dataclasses.replace(training.CASES[1], batch=16)  # 7 batches, the last short
    whole, sliced = training.build_runners(case, data), training.build_runners(case, data)
    for runner in whole:
        runner.train_epoch(3)
    seconds = run._sliced_epoch(sliced, 3, None, slices)
    assert sorted(seconds) == sorted(r.name for r in sliced)
    assert all(s > 0 for s in seconds.values())
    for a, b in zip(whole, sliced):
        if a.name == "numpy":
            pairs = zip(a.model.params.values, b.model.params.values)
        elif a.name == "torch":
            pairs = ((p.detach().numpy(), q.detach().numpy())
                     for p, q in zip(a.model.parameters(), b.model.parameters()))
        else:
            pairs = ((p.array, q.array) for p, q in zip(a.model.parameters(),
                                                        b.model.parameters()))
        pairs = list(pairs)
        assert pairs
        for p, q in pairs:
            np.testing.assert_array_equal(p, q)


def test_nudged_starts_are_one_ulp_away_and_seeded():
    case = next(c for c in training.CASES if c.accuracy_variants)
    base = [p.detach().numpy() for p in training.build_torch_model(case).parameters()]
    first, again, other = ([p.detach().numpy() for p in training.nudged_start(case, k)
                            .parameters()] for k in (1, 1, 2))
    moved = 0
    for b, n, a in zip(base, first, again):
        up, down = np.nextafter(b, np.float32(np.inf)), np.nextafter(b, np.float32(-np.inf))
        assert ((n == b) | (n == up) | (n == down)).all()
        moved += int((n != b).sum())
        np.testing.assert_array_equal(n, a)  # seeded
    assert moved > sum(b.size for b in base) / 2  # about two weights in three move
    assert any((n != o).any() for n, o in zip(first, other))
