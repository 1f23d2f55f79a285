"""Measuring instruments: peak RSS by sampling, GEMM peak, FLOP counts, thread limits."""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["RssSampler", "release_free_memory", "gemm_peak", "forward_macs", "timed",
           "settle", "median", "limit_threads", "machine_summary", "SETTLE_SECONDS"]

_PAGE = os.sysconf("SC_PAGE_SIZE")

SETTLE_SECONDS = 0.3
"""Pause before each timed stretch, untimed. After its last call OpenBLAS's idle worker
keeps spinning on the other core for 2^28 clock ticks (~0.1 s here) before it sleeps,
and a framework timed in that window shares its second core with it: torch's 100-step
ReLU MLP epochs ran 1.30-1.37x slower right after ember's or the NumPy reference's than
after a 0.3 s pause (0.1 s and longer pauses read alike; docs/performance.md, section
27). With the pause every framework starts from idle threads, as it would run alone.
``--quick`` sets it to 0: a smoke run times nothing that matters."""


def settle() -> None:
    """Let every thread pool left spinning by the last timed stretch go idle."""
    time.sleep(SETTLE_SECONDS)


class RssSampler:
    """Peak resident memory of this process, sampled from /proc/self/statm.

    A daemon thread reads the resident page count every ``interval`` seconds while
    ``track()`` measures one stretch of work: its value is the highest RSS seen
    during the stretch minus the RSS at its start (bytes). Spikes shorter than
    the interval can be missed; the reading costs about 2 microseconds. Outside
    ``track()`` the thread sleeps on an event and never wakes: a thread waking every
    2 ms slowed torch's LeNet-5 step by ~50% on this 2-core machine with torch's
    default OpenMP policy (its parallel regions wait for whichever thread the wake-up
    displaced), so timed work must
    run untracked (benchmarks/run.py tracks only the warm-up epoch).
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.peak = 0
        self.active = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self.thread.start()

    def rss(self) -> int:
        return int(os.pread(self.fd, 128, 0).split()[1]) * _PAGE

    def _loop(self) -> None:
        while True:
            self.active.wait()  # asleep, with no wake-ups, between tracked stretches
            value = self.rss()
            if value > self.peak:
                self.peak = value
            time.sleep(self.interval)

    @contextmanager
    def track(self):
        """``with sampler.track() as result: ...``; then ``result[0]`` is the peak increase."""
        result = [0]
        base = self.rss()
        self.peak = base
        self.active.set()
        try:
            yield result
        finally:
            self.active.clear()
            result[0] = max(self.peak, self.rss()) - base


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that one
    framework's freed-but-kept memory does not hide the next one's growth."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def limit_threads(n: int):
    """Run with ``n`` threads in every BLAS/OpenMP pool (NumPy's OpenBLAS, torch's
    MKL and OpenMP) and in torch's intra-op pool."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    try:
        with threadpool_limits(limits=n):
            torch.set_num_threads(n)
            yield
    finally:
        # after threadpoolctl has put its pools back: it restores the OpenMP pool to
        # what it saw on entry, and torch's thread count is that same pool, so setting
        # torch inside the block (as before session 3) left torch on n threads for good
        torch.set_num_threads(before)


def gemm_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """The best float32 GFLOP/s of a ``size``-cubed product, NumPy and torch, with
    the current thread settings and with one thread (on a busy machine one thread
    can be the faster)."""
    import torch

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    flops = 2.0 * size ** 3
    threads = torch.get_num_threads()
    best: dict[str, float] = {}
    for label, n in ((f"{threads} threads", threads), ("1 thread", 1)):
        with limit_threads(n):
            for _ in range(repeats):
                for name, fn in (("numpy", lambda: a @ b), ("torch", lambda: torch.mm(ta, tb))):
                    key = f"{name}, {label}"
                    best[key] = max(best.get(key, 0.0), flops / timed(fn) / 1e9)
    return best


def forward_macs(torch_model: Any, sample_shape: tuple) -> int:
    """Multiply-accumulates of one sample's forward pass, counted over Linear and
    Conv2d layers only (elementwise work, pooling and normalisation are left out)."""
    import torch

    total = [0]

    def count(module: Any, inputs: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Linear):
            total[0] += module.in_features * module.out_features
        elif isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * int(np.prod(module.kernel_size))
            total[0] += output[0].numel() * per_output

    handles = [m.register_forward_hook(count) for m in torch_model.modules()]
    try:
        with torch.no_grad():
            torch_model.eval()(torch.zeros((1,) + tuple(sample_shape)))
    finally:
        torch_model.train()
        for h in handles:
            h.remove()
    return total[0]


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call of ``fn``, after ``settle()``."""
    settle()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cpu_fields() -> dict:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty elsewhere)."""
    fields: dict = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def machine_summary() -> str:
    """CPU model (and family: Zen 4 is 25, Zen 5 26), logical cores and load average."""
    cpu = _cpu_fields()
    model = cpu.get("model name", "unknown CPU")
    if "cpu family" in cpu:
        model += f" (family {cpu['cpu family']}, model {cpu.get('model', '?')})"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} logical cores, load average {load} at the start"


def blas_summary() -> str:
    """NumPy's BLAS, the kernels it chose when it loaded, and the environment variables that
    steer that choice: ``OPENBLAS_CORETYPE=Haswell`` makes OpenBLAS run its AVX2 kernels on
    an AVX-512 CPU, at about half the float32 GEMM peak (docs/performance.md, section 30),
    while torch's oneDNN and MKL ignore it."""
    from threadpoolctl import threadpool_info
    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not found:
        return "not found by threadpoolctl"
    info = found[0]
    text = f"{info.get('internal_api')} {info.get('version')}, {info.get('architecture')} kernels"
    steering = [f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                if k in os.environ]
    if steering:
        text += f" (set in the environment: {', '.join(steering)})"
    from ember.blas import kernels_use_avx512
    core = info.get("architecture")
    if core and not kernels_use_avx512(core) and \
            "avx512f" in _cpu_fields().get("flags", "").split():
        text += "; this CPU has AVX-512, which these kernels do not use"
    return text
