"""Results as Markdown tables, and the check of each result against its target."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmarks.measure import median
from benchmarks.micro import PER_OP, MicroResult
from benchmarks.trajectory import DRIFT_LIMIT, FLOAT64_LIMIT, TrajectoryResult
from benchmarks.training import Case

__all__ = ["RunStats", "CaseResult", "training_table", "inference_table", "micro_table",
           "trajectory_table", "variant_table", "target_table", "TRAINING_COLUMNS",
           "TRAJECTORY_NOTE", "VARIANTS_NOTE"]

MB = 1024 * 1024
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}  # Student's t, two-sided 95%, by degrees of freedom (10: beyond)


@dataclass
class RunStats:
    """One framework's epochs of one case."""

    seconds: list = field(default_factory=list)   # timed epochs only
    memory: list = field(default_factory=list)    # peak RSS increase per epoch, bytes
    accuracy: float = float("nan")
    images_per_s: float = float("nan")

    @property
    def epoch_s(self) -> float:
        return median(self.seconds)

    @property
    def peak_mb(self) -> float:
        return max(self.memory) / MB if self.memory else float("nan")


@dataclass
class CaseResult:
    case: Case
    stats: dict            # runner name -> RunStats
    forward_macs: int      # per sample
    samples: int           # per epoch
    test_samples: int
    # framework -> {variant: test accuracy} of float32 variants (case.accuracy_variants)
    variant_accuracies: dict = field(default_factory=dict)

    @property
    def sampling_noise(self) -> float:
        """Two standard errors of the difference of two test accuracies near ``p``."""
        p = self.stats["torch"].accuracy
        return 2 * math.sqrt(max(2 * p * (1 - p), 1e-4) / max(self.test_samples, 1))

    def accuracy_samples(self, framework: str) -> list[float]:
        """The framework's test accuracy, then its float32 variants' (if trained)."""
        return [self.stats[framework].accuracy,
                *self.variant_accuracies.get(framework, {}).values()]

    @property
    def accuracy_gap(self) -> float:
        """ember's accuracy minus torch's, as a distance: of the means over the float32
        variants where they were trained, else of the two runs."""
        e, t = self.accuracy_samples("ember"), self.accuracy_samples("torch")
        return abs(sum(e) / len(e) - sum(t) / len(t))

    @property
    def variant_noise(self) -> float:
        """Half-width of a two-sample Student t test at 95% on the variants' accuracies:
        the gap between the two means that float32 noise alone explains, with the spread
        pooled from both frameworks' variants. NaN without variants."""
        e, t = self.accuracy_samples("ember"), self.accuracy_samples("torch")
        dof = len(e) + len(t) - 2
        if len(e) < 2 or len(t) < 2:
            return float("nan")
        squares = sum((a - sum(x) / len(x)) ** 2 for x in (e, t) for a in x)
        return T_975[min(dof, 10)] * math.sqrt(squares / dof * (1 / len(e) + 1 / len(t)))

    @property
    def accuracy_noise(self) -> float:
        """The accuracy gap that is noise: the test set's sampling noise, or the float32
        variants' t-test limit where they were trained and it is larger."""
        noise = self.variant_noise
        return self.sampling_noise if math.isnan(noise) else max(self.sampling_noise, noise)

    @property
    def gflop_per_epoch(self) -> float:
        return 6.0 * self.forward_macs * self.samples / 1e9

    def peak_fraction(self, name: str, peak_gflops: float) -> float:
        s = self.stats.get(name)
        return self.gflop_per_epoch / s.epoch_s / peak_gflops if s else float("nan")

    def ratio(self, a: str, b: str, attr: str = "epoch_s") -> float:
        if a not in self.stats or b not in self.stats:
            return float("nan")
        return getattr(self.stats[a], attr) / getattr(self.stats[b], attr)


TRAINING_COLUMNS = ["case", "batch", "run", "ember s/epoch", "torch s/epoch", "numpy s/epoch",
                    "ember/torch", "ember/numpy", "ember MB", "torch MB", "numpy MB",
                    "MB ember/torch", "acc ember", "acc torch", "acc numpy", "GFLOP/epoch",
                    "% peak ember", "% peak torch", "% peak numpy"]


def _num(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]


def _training_row(res: CaseResult, ember: str, peak: float) -> list:
    s = res.stats
    get = lambda name, attr: getattr(s[name], attr) if name in s else float("nan")  # noqa: E731
    pct = [100 * res.peak_fraction(n, peak) for n in (ember, "torch", "numpy")]
    return [res.case.label, res.case.batch, ember,
            _num(get(ember, "epoch_s")), _num(get("torch", "epoch_s")),
            _num(get("numpy", "epoch_s")),
            _num(res.ratio(ember, "torch")), _num(res.ratio(ember, "numpy")),
            _num(get(ember, "peak_mb")), _num(get("torch", "peak_mb")),
            _num(get("numpy", "peak_mb")), _num(res.ratio(ember, "torch", "peak_mb")),
            _num(get(ember, "accuracy"), 4), _num(get("torch", "accuracy"), 4),
            _num(get("numpy", "accuracy"), 4), _num(res.gflop_per_epoch),
            _num(pct[0], 2), _num(pct[1], 2), _num(pct[2], 2)]


def training_table(results: list[CaseResult], peak: float) -> list[str]:
    rows = [_training_row(res, name, peak) for res in results
            for name in res.stats if name.startswith("ember")]
    return _table(TRAINING_COLUMNS, rows)


def inference_table(results: list[CaseResult]) -> list[str]:
    rows = []
    for res in results:
        if res.case.inference_batch is None:
            continue
        s = res.stats
        ips = [s[n].images_per_s if n in s else float("nan") for n in ("ember", "torch", "numpy")]
        rows.append([res.case.label.split(",")[0], res.case.inference_batch,
                     *[_num(v) for v in ips], _num(ips[1] / ips[0]), _num(ips[2] / ips[0])])
    header = ["model", "batch", "ember images/s", "torch images/s", "numpy images/s",
              "ember time / torch time", "ember time / numpy time"]
    return _table(header, rows) if rows else []


def micro_table(results: list[MicroResult]) -> list[str]:
    rows = [[r.name, _num(r.ember_us), _num(r.torch_us), _num(r.ratio)] for r in results]
    return _table(["benchmark", "ember µs", "torch µs", "ember/torch"], rows)


TRAJECTORY_NOTE = (
    "Relative distance |a - b| / |b| between all parameters of two runs after the same "
    "SGD steps from the same weights on the same batches (benchmarks/trajectory.py). "
    "float32: ember against torch, and torch against torch on another thread count, "
    "which changes only the order of float32 sums; similar sizes mean an accuracy gap "
    "after an epoch is float32 noise. float64: ember against torch; ~1e-14 means the "
    "same arithmetic.")


def trajectory_table(results: list[TrajectoryResult]) -> list[str]:
    header = ["case", "steps", "float32 ember vs torch", "float32 torch vs torch "
              "(threads)", "ratio", "float64 ember vs torch"]
    rows = [[r.case.label, r.steps, f"{r.ember_torch_32:.3g}",
             f"{r.torch_torch_32:.3g} ({r.threads[1]} vs {r.threads[0]})",
             _num(r.drift_ratio), f"{r.ember_torch_64:.3g}"] for r in results]
    return _table(header, rows)


VARIANTS_NOTE = (
    "Test accuracy after the same epoch on the same batches, for each framework as timed "
    "and from three other float32 starts: the timed run's initial weights with each "
    "weight moved by one ulp up, down or not at all (seeded at random), both frameworks "
    "from the same nudged start. A one-epoch CIFAR run is chaotic in float32 (any "
    "change in the order of float32 sums moves its accuracy by a point or more), so one "
    "run of each says little: the target compares the two frameworks' mean accuracies "
    "with Student's two-sample t test at 95%, the spread pooled from both.")


def variant_table(results: list[CaseResult]) -> list[str]:
    rows = []
    for res in results:
        for framework in ("ember", "torch"):
            names = ["as timed", *res.variant_accuracies.get(framework, {})]
            rows += [[res.case.label, framework, name, f"{acc:.4f}"] for name, acc in
                     zip(names, res.accuracy_samples(framework))]
    return _table(["case", "framework", "variant", "test accuracy"], rows)


def _check(label: str, value: float, limit: float) -> list:
    met = "-" if math.isnan(value) else ("met" if value <= limit else "MISSED")
    return [label, f"≤ {_num(limit)}", _num(value), met]


def target_table(results: list[CaseResult], micro: list[MicroResult],
                 trajectories: list[TrajectoryResult] = ()) -> list[str]:
    rows = []
    for res in results:
        title = f"{res.case.label}, batch {res.case.batch}"
        rows.append(_check(f"{title}: time ember/torch", res.ratio("ember", "torch"),
                           res.case.target))
        if "numpy" in res.stats:
            rows.append(_check(f"{title}: time ember/numpy", res.ratio("ember", "numpy"), 1.5))
        rows.append(_check(f"{title}: peak memory ember/torch",
                           res.ratio("ember", "torch", "peak_mb"), 1.5))
        e, t = res.accuracy_samples("ember"), res.accuracy_samples("torch")
        means = "" if len(e) + len(t) == 2 else \
            f" (means of {len(e)} and {len(t)} float32 variants; limit: two-sample t test " \
            "at 95%, or the test set's sampling noise if larger)"
        rows.append(_check(f"{title}: accuracy gap, ember vs torch{means}", res.accuracy_gap,
                           res.accuracy_noise))
    for t in trajectories:
        title = f"{t.case.label}, {t.steps} steps"
        rows.append(_check(f"{title}: float32 drift ember-torch / torch-torch", t.drift_ratio,
                           DRIFT_LIMIT))
        rows.append(_check(f"{title}: float64 distance ember vs torch", t.ember_torch_64,
                           FLOAT64_LIMIT))
    for m in micro:
        if m.name == PER_OP:
            rows.append(_check("per-op overhead ember/torch", m.ratio, 1.0))
    return _table(["target", "limit", "measured", "status"], rows)
