"""Run the benchmark suite: ember against PyTorch (CPU) and a hand-written NumPy reference.

    python -m benchmarks.run                         # everything; writes docs/benchmarks.md
    python -m benchmarks.run --quick                 # a ten-second smoke run (CI)
    python -m benchmarks.run --cases lenet5_b64 micro --data ../shared/datasets

All frameworks run in this one process with the same thread count, on the same
models, initial weights, batches, optimizer and epochs, interleaved epoch by
epoch (ember, torch, NumPy, ember, ...). See docs/performance.md for the method.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import measure, report
from benchmarks.micro import MICRO, run_micro
from benchmarks.trajectory import trajectory_check
from benchmarks.training import CASES, REPO_ROOT, Case, EmberRunner, TorchRunner, \
    batch_count, build_runners, build_torch_model, data_root, load_data, nudged_start

START = time.perf_counter()
QUICK_LIMITS = {"mnist": (320, 200), "cifar10": (128, 64)}  # (train, test) images
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks.md"
PEAK = {False: (2048, 5), True: (1024, 2)}  # GEMM size and repeats, by --quick


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [c.key for c in CASES] + ["micro"]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder holding mnist/ and cifar-10/ "
                                       "(default: $EMBER_DATA, else ../shared/datasets)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny subsets and one timed epoch: a smoke run of every column")
    parser.add_argument("--cases", nargs="+", choices=names, metavar="CASE",
                        help=f"run only these (from: {', '.join(names)})")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for every framework's BLAS/OpenMP pools (default 2)")
    parser.add_argument("--epochs", type=int, help="timed epochs per case (default: the case's)")
    parser.add_argument("--out", help="Markdown file to write (default: docs/benchmarks.md, "
                                      "none with --quick)")
    return parser.parse_args(argv)


def run_case(case: Case, data, sampler: measure.RssSampler, quick: bool,
             epochs: int | None) -> report.CaseResult:
    """Warm-up, then the timed epochs, each framework in turn; then accuracy and speed."""
    runners = build_runners(case, data)
    stats = {r.name: report.RunStats() for r in runners}
    timed_epochs = 1 if quick else (epochs or case.epochs)
    warmup = 1 if quick else case.warmup_batches
    # (seed, batches) of each epoch: two steps first, unmeasured (each library's one-off
    # set-up on first use - torch's oneDNN primitives, ember's Numba kernels loading from
    # their cache or compiling, ~110 MB of LLVM - is not training memory; two, because an
    # optimizer's second step is its first with state, and ember's momentum and Adam
    # kernels first compile there: 3-6 MB of the ReLU MLP's peak with a cold Numba cache),
    # the warm-up, then the timed epochs
    schedule = [(999, 2), (1000, warmup)] + [(1000 + e, None) for e in range(1, 1 + timed_epochs)]
    for runner in runners:
        runner.train_epoch(*schedule[0])
    for epoch in range(1 + timed_epochs):
        if epoch and case.slices > 1:
            for name, seconds in _sliced_epoch(runners, *schedule[1 + epoch],
                                               case.slices).items():
                stats[name].seconds.append(seconds)
            print(f"  {case.key} epoch {epoch} (in {case.slices} slices): " + ", ".join(
                f"{n} {s.seconds[-1]:.2f}s" for n, s in stats.items()), flush=True)
            continue
        # each round starts with the next framework, so none always runs right after
        # another one (whose epoch may leave caches, threads or the CPU's clock behind)
        for runner in _rotated(runners, epoch):
            # memory is sampled in the warm-up epoch only: the sampling thread's wake-ups
            # would slow the timed epochs (torch's most: measure.RssSampler)
            seconds, grown = _epoch(runner, *schedule[1 + epoch], sampler if epoch == 0 else None)
            if epoch:
                stats[runner.name].seconds.append(seconds)
            else:
                stats[runner.name].memory.append(grown)
        print(f"  {case.key} epoch {epoch}: " + ", ".join(
            f"{n} {s.seconds[-1]:.2f}s" for n, s in stats.items() if epoch and s.seconds),
            flush=True)
    x_test = data.test_inputs()
    for runner in runners:
        stats[runner.name].accuracy = float(np.mean(runner.predict(x_test) == data.test_labels))
    if case.inference_batch:
        _inference(case, runners, stats, x_test, rounds=1 if quick else 3)
    macs = measure.forward_macs(build_torch_model(case), data.sample_shape)
    result = report.CaseResult(case, stats, macs, len(data.train_labels), len(data.test_labels))
    if case.accuracy_variants:
        result.variant_accuracies = _variant_accuracies(case, data, schedule, x_test)
    return result


def _rotated(runners: list, start: int) -> list:
    return runners[start % len(runners):] + runners[:start % len(runners)]


def _sliced_epoch(runners: list, seed: int, limit: int | None, slices: int) -> dict:
    """One epoch of every runner, timed in ``slices`` consecutive slices of its batches,
    the frameworks taking turns slice by slice (each round starting with the next one):
    a one-epoch case would otherwise time each framework in one stretch of a minute or
    more, on a machine whose speed moves by 30% between minutes. Returns each runner's
    epoch seconds: the sum of its slices."""
    steps = {r.name: r.steps(seed, limit) for r in runners}
    batches = batch_count(len(runners[0].data.train_labels), runners[0].case.batch, limit)
    bounds = [batches * i // slices for i in range(slices + 1)]
    seconds = dict.fromkeys(steps, 0.0)
    for i in range(slices):
        for runner in _rotated(runners, i):
            _quiet_start()
            start = time.perf_counter()
            for _ in range(bounds[i + 1] - bounds[i]):
                next(steps[runner.name])
            seconds[runner.name] += time.perf_counter() - start
    for name, rest in steps.items():  # every batch was trained: nothing may be left over
        if next(rest, None) is not None:
            raise RuntimeError(f"{name}: the sliced epoch has batches left over")
    return seconds


NUDGED_STARTS = 3
"""Extra float32 starts of the CIFAR CNN (``nudged_start``) that both frameworks train:
four samples a side of a chaotic one-epoch accuracy (docs/performance.md, section 33)."""


def _variant_accuracies(case: Case, data, schedule: list, x_test) -> dict:
    """Test accuracies of both frameworks retrained on the same batches (``schedule``)
    from ``NUDGED_STARTS`` starts, each one ulp away from the timed run's in random
    weights, both frameworks from the same one: the spread of one-epoch accuracies that is
    float32 noise (report.VARIANTS_NOTE)."""
    accuracies: dict = {"ember": {}, "torch": {}}
    for k in range(1, 1 + NUDGED_STARTS):
        start = nudged_start(case, k)
        for runner in (EmberRunner(case, data, start), TorchRunner(case, data, start)):
            for seed, limit in schedule:  # ember copied the start before torch trains it
                runner.train_epoch(seed, limit)
            name = f"start nudged ({k})"
            accuracy = float(np.mean(runner.predict(x_test) == data.test_labels))
            accuracies[runner.name][name] = accuracy
            print(f"  {case.key}: {runner.name} ({name}) accuracy {accuracy:.4f}", flush=True)
    return accuracies


def _quiet_start() -> None:
    """Before a timed stretch: freed heap memory back to the OS (so that one framework's
    kept memory does not hide the next one's growth), then idle thread pools."""
    measure.release_free_memory()
    measure.settle()


def _epoch(runner, seed: int, limit: int | None,
           sampler: measure.RssSampler | None) -> tuple:
    """One (possibly partial) epoch: its seconds and, with a sampler, its peak RSS rise
    in bytes (else None)."""
    _quiet_start()
    if sampler is None:
        start = time.perf_counter()
        runner.train_epoch(seed, limit)
        return time.perf_counter() - start, None
    with sampler.track() as grown:
        start = time.perf_counter()
        runner.train_epoch(seed, limit)
        seconds = time.perf_counter() - start
    return seconds, grown[0]


def _inference(case: Case, runners: list, stats: dict, x_test: np.ndarray, rounds: int) -> None:
    """Images per second of forward passes over the test set, in rounds, median."""
    main = [r for r in runners if r.name in ("ember", "torch", "numpy")]
    times: dict[str, list] = {r.name: [] for r in main}
    for _ in range(rounds):
        for r in main:
            times[r.name].append(measure.timed(lambda r=r: r.predict(x_test,
                                                                     case.inference_batch)))
    for name, t in times.items():
        stats[name].images_per_s = len(x_test) / measure.median(t)


def kernels_in_use() -> str:
    from ember.ops import kernels
    if not kernels.enabled():
        return "off (Numba not installed or EMBER_NUMBA=0): NumPy copies"
    import numba
    return f"on (Numba {numba.__version__})"


def simd_in_use() -> str:
    """Whether the convolutions' float32 products run on ember's AVX-512 kernels, and why."""
    from ember.ops import simd
    if simd.wanted():
        return "on (this CPU has AVX-512; NumPy's BLAS kernels do not use it)"
    return "off (no Numba, no AVX-512, or NumPy's BLAS uses AVX-512 itself): NumPy's products"


def direct_in_use() -> str:
    """Whether small layers' float32 convolutions run direct on ember's AVX-512 vectors."""
    from ember.ops import simd_conv
    if simd_conv.enabled():
        return ("on (this CPU has AVX-512): small layers, and blocked ones where the products "
                "above are on and output rows fill the vectors")
    return "off (no Numba or no AVX-512): im2col and products"


def header(args: argparse.Namespace, peak: dict, threads: int, sources: list[str]) -> list[str]:
    import torch

    import ember  # noqa: F401
    mode = "quick smoke run (tiny subsets, 1 timed epoch)" if args.quick else "full run"
    return [
        "# ember benchmarks", "",
        f"Written by `{' '.join(['python -m benchmarks.run'] + sys.argv[1:])}`"
        f" on {datetime.date.today().isoformat()} ({mode}). Method, targets and the history "
        "of each optimisation: [performance.md](performance.md).", "",
        f"- Machine: {measure.machine_summary()}",
        f"- Python {platform.python_version()}, NumPy {np.__version__}, "
        f"torch {torch.__version__}; {threads} thread(s) for every framework; "
        f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'not set (torch defaults)')}",
        f"- NumPy's BLAS (ember's and the NumPy reference's products): {measure.blas_summary()}",
        f"- ember's compiled kernels (ember/ops/kernels.py): {kernels_in_use()}",
        f"- ember's AVX-512 products for convolutions (ember/ops/simd.py): {simd_in_use()}",
        f"- ember's direct convolutions (ember/ops/simd_conv.py): {direct_in_use()}",
        f"- float32 GEMM peak measured in this run (best of {PEAK[args.quick][1]} products of "
        f"{PEAK[args.quick][0]}² matrices): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
        + " GFLOP/s; '% peak' divides by the largest",
        *[f"- Data: {s}" for s in sources], "",
    ]


def explanations() -> list[str]:
    return [
        "Seconds per epoch: median over the timed epochs, after a warm-up epoch (CIFAR: a "
        "few warm-up batches, then one timed epoch, timed in 8 slices of its batches with "
        "the frameworks taking turns slice by slice). Ratios below 1 mean ember is faster. "
        "MB: the largest rise of resident memory (RSS) over its value at the start of the "
        "warm-up epoch (after two unmeasured steps: libraries' set-up on first use, an "
        "optimizer's first step with state included), "
        "sampled every 2 ms by a thread reading /proc/self/statm, after "
        "returning freed heap memory to the OS (malloc_trim); the sampling thread sleeps "
        "during the timed epochs (its wake-ups slowed torch's LeNet-5 step by ~50%). "
        "Accuracy: on the test set after the last "
        "epoch; the accuracy target allows two standard errors of the test set's sampling, "
        "or, for the one-epoch CIFAR CNN, a t test on the mean accuracies of four float32 "
        "starts of each framework (see 'Accuracy of float32 variants'), if larger. "
        "GFLOP/epoch: 6 x forward multiply-accumulates of the Linear and Conv2d "
        "layers x training images (training = forward + input-gradient + weight-gradient "
        "products; elementwise work, pooling, normalisation and the optimizer are not "
        "counted); '% peak' divides that per second by the measured GEMM peak.", "",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = args.cases or [c.key for c in CASES] + ["micro"]
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_OUT)
    start = time.perf_counter()
    if args.quick:  # a smoke run times nothing that matters: no pauses
        measure.SETTLE_SECONDS = 0.0
    with measure.limit_threads(args.threads):
        lines, results, micro = run_all(args, wanted)
    lines.append(f"Total run time: {time.perf_counter() - start:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written to {out}")
    return 0


def run_all(args: argparse.Namespace, wanted: list[str]) -> tuple[list[str], list, list]:
    sampler = measure.RssSampler()
    peak = measure.gemm_peak(*PEAK[args.quick])
    # --quick uses the small stand-ins unless --data names a folder
    root = None if args.quick and not args.data else data_root(args.data)
    datasets, results, trajectories = {}, [], []
    for case in [c for c in CASES if c.key in wanted]:
        if case.dataset not in datasets:
            limits = QUICK_LIMITS[case.dataset] if args.quick else (None, None)
            datasets[case.dataset] = load_data(case.dataset, root, *limits)
        if args.quick:
            case = dataclasses.replace(case, model_kwargs={**case.model_kwargs,
                                                           **case.quick_kwargs})
        print(f"{case.key}: {case.label}, batch {case.batch} "
              f"({time.perf_counter() - START:.1f} s)", flush=True)
        results.append(run_case(case, datasets[case.dataset], sampler, args.quick, args.epochs))
        if case.trajectory_steps:
            print(f"  {case.key}: trajectories ({time.perf_counter() - START:.1f} s)", flush=True)
            trajectories.append(trajectory_check(case, datasets[case.dataset],
                                                 2 if args.quick else case.trajectory_steps,
                                                 args.threads))
    micro = []
    if "micro" in wanted:
        print(f"microbenchmarks ({time.perf_counter() - START:.1f} s)", flush=True)
        micro = run_micro(list(MICRO), rounds=2 if args.quick else 7,
                          budget=0.002 if args.quick else 0.03, quick=args.quick)
    best = max(peak.values())
    lines = header(args, peak, args.threads, [d.source for d in datasets.values()])
    if results:
        lines += ["## Training", ""] + report.training_table(results, best) + [""]
        lines += explanations()
        inference = report.inference_table(results)
        lines += (["## Inference", ""] + inference + [""]) if inference else []
    if trajectories:
        lines += ["## Float32 trajectories", ""] + report.trajectory_table(trajectories)
        lines += ["", report.TRAJECTORY_NOTE, ""]
    varied = [r for r in results if r.variant_accuracies]
    if varied:
        lines += ["## Accuracy of float32 variants", ""] + report.variant_table(varied)
        lines += ["", report.VARIANTS_NOTE, ""]
    if micro:
        lines += ["## Microbenchmarks (median per call)", ""] + report.micro_table(micro) + [""]
    lines += ["## Targets (ratios from this run)", ""] + report.target_table(results, micro,
                                                                             trajectories)
    return lines + [""], results, micro


if __name__ == "__main__":
    sys.exit(main())
