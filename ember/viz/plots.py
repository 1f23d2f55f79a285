"""Training plots with matplotlib: history curves, decision boundaries, conv filters,
image grids with predictions, confusion matrices.

Every function draws into ``ax=`` (an Axes of your own figure, so plots compose)
or into a new figure, returns what it drew on, and with ``path=`` also saves the
figure as a PNG, written atomically. Figures are built with matplotlib's object
API on the Agg canvas: nothing here touches pyplot's global state or needs a display.

>>> fig = plot_history({"loss": [0.9, 0.5, 0.3], "accuracy": [0.6, 0.8, 0.9]},
...                    path="history.png")
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_history", "plot_decision_boundary", "plot_filters", "plot_samples",
           "plot_confusion_matrix", "confusion_matrix", "save_figure"]

DPI = 100


# ------------------------------------------------------------ shared helpers
def _numpy(values: Any) -> np.ndarray:
    """An ember Tensor, a torch tensor or anything array-like as a NumPy array."""
    if hasattr(values, "array") and isinstance(values.array, np.ndarray):  # ember.Tensor
        return values.array
    if hasattr(values, "detach") and hasattr(values, "numpy"):  # torch.Tensor
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # imported here: matplotlib is an optional extra

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _axes_or_new(ax: Any, width: float, height: float) -> Any:
    if ax is None:
        return _new_figure(width, height).add_subplot()
    if not hasattr(ax, "figure") or not hasattr(ax, "imshow"):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    return ax


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = DPI) -> str:
    """Save a matplotlib Figure as PNG: rendered in memory, then written atomically
    (a crash never leaves half a file). Missing folders are created."""
    from ember.serialize import atomic_write

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write(path, buffer.getvalue())
    return path


def _finish(fig: Any, path: str | os.PathLike | None) -> None:
    if path is not None:
        save_figure(fig, path)


# ------------------------------------------------------------ history
def _history_dict(history: Any) -> dict[str, list[float]]:
    """Keras-style ``{"loss": [...], ...}``, an object with ``.history``, or a list
    of per-epoch dicts, as one dict of float lists."""
    history = getattr(history, "history", history)
    if isinstance(history, Sequence) and all(isinstance(h, Mapping) for h in history):
        keys = dict.fromkeys(k for epoch in history for k in epoch)
        history = {k: [epoch.get(k, math.nan) for epoch in history] for k in keys}
    if not isinstance(history, Mapping) or not history:
        raise TypeError("plot_history: expected a non-empty dict of lists (like Keras' "
                        f"history.history) or an object with .history, got {type(history)}")
    out = {}
    for key, values in history.items():
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        if array.size:
            out[str(key)] = array.tolist()
    return out


def _is_lr(key: str) -> bool:
    return key in ("lr", "learning_rate") or key.startswith(("lr_", "learning_rate"))


def _panels(keys: Sequence[str]) -> dict[str, list[str]]:
    """Group series: all losses together, one panel per metric (train and val_), lr last."""
    panels: dict[str, list[str]] = {}
    for key in keys:
        if _is_lr(key):
            continue
        base = "loss" if "loss" in key else key.removeprefix("val_").removeprefix("train_")
        panels.setdefault(base, []).append(key)
    lr = [k for k in keys if _is_lr(k)]
    if lr:
        panels["learning rate"] = lr
    return panels


def _draw_series(ax: Any, history: dict, keys: list[str], label: str,
                 first_epoch: int = 1) -> None:
    for key in keys:
        values = history[key]
        epochs = np.arange(first_epoch, first_epoch + len(values))
        ax.plot(epochs, values, marker="o" if len(values) <= 30 else None, markersize=3,
                linestyle="--" if key.startswith("val_") else "-", label=key)
    values = np.concatenate([history[k] for k in keys])
    finite = values[np.isfinite(values)]
    spread = {"loss": 100, "learning rate": 10}.get(label)  # losses and schedules span decades
    if spread and finite.size and finite.min() > 0 and finite.max() > spread * finite.min():
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def plot_history(history: Any, ax: Any = None, path: str | os.PathLike | None = None,
                 title: str | None = None) -> Any:
    """Loss, metrics and learning rate per epoch; returns the Figure.

    ``history``: a dict of lists (``{"loss": [...], "val_loss": [...],
    "accuracy": [...], "lr": [...]}``, as Keras' ``history.history``), an object
    with such a ``.history`` (ember.train's History: its ``.epoch`` numbers the x
    axis), or a list of per-epoch dicts. Losses share a panel, each metric gets its
    own (``train_*`` and ``val_*`` together, ``val_*`` dashed), the learning rate
    comes last.
    ``ax``: one Axes (everything drawn on it, the learning rate on a right-hand
    axis) or a sequence of Axes, one per panel.

    >>> fig = plot_history({"loss": [1.0, 0.4], "val_loss": [1.1, 0.6]}, path="h.png")
    """
    epochs = getattr(history, "epoch", None)  # a resumed run's History starts later
    first_epoch = int(epochs[0]) + 1 if isinstance(epochs, Sequence) and epochs else 1
    history = _history_dict(history)
    panels = _panels(list(history))
    if ax is None:
        fig = _new_figure(4.2 * len(panels) + 0.6, 3.6)
        axes = list(np.atleast_1d(fig.subplots(1, len(panels))))
    elif isinstance(ax, (Sequence, np.ndarray)):
        axes = list(np.ravel(ax))
        if len(axes) < len(panels):
            raise ValueError(f"plot_history: {len(panels)} panels ({', '.join(panels)}) need "
                             f"{len(panels)} axes, got {len(axes)}")
    else:
        axes = _single_axes_panels(_axes_or_new(ax, 0, 0), panels)
    for target, (label, keys) in zip(axes, panels.items()):
        _draw_series(target, history, keys, label, first_epoch)
    fig = axes[0].figure
    if title:
        fig.suptitle(title)
    _finish(fig, path)
    return fig


def _single_axes_panels(ax: Any, panels: dict) -> list:
    """Everything on one Axes: the learning rate (if any) on a twin y axis."""
    axes = [ax] * len(panels)
    if "learning rate" in panels and len(panels) > 1:
        axes[-1] = ax.twinx()
    return axes


# ------------------------------------------------------------ decision boundary
def _model_dtype(model: Any) -> Any:
    params = getattr(model, "parameters", None)
    for p in (params() if callable(params) else ()):
        if p.array.dtype.kind == "f":
            return p.array.dtype
    return np.float32


def _evaluate(model: Callable, points: np.ndarray) -> np.ndarray:
    """The model's outputs on ``points`` in eval mode and without a graph."""
    import ember

    training = getattr(model, "training", None)
    if training is not None:
        model.eval()
    try:
        with ember.no_grad():
            out = model(ember.tensor(points, dtype=_model_dtype(model)))
    finally:
        if training is not None:
            model.train(training)
    return _numpy(out).astype(np.float64)


def _probabilities(out: np.ndarray, output: str) -> np.ndarray:
    """(M, K) class probabilities from logits or probabilities; K = 2 for one output."""
    if output not in ("auto", "logits", "probs"):
        raise ValueError(f"plot_decision_boundary: output must be 'auto', 'logits' or "
                         f"'probs', got {output!r}")
    out = out.reshape(out.shape[0], -1)
    if out.shape[1] == 1:
        p = out[:, 0]
        is_prob = output == "probs" or (output == "auto" and p.min() >= 0 and p.max() <= 1)
        p = p if is_prob else 1 / (1 + np.exp(-np.clip(p, -500, 500)))
        return np.stack([1 - p, p], axis=1)
    is_prob = output == "probs" or (output == "auto" and out.min() >= 0
                                    and np.allclose(out.sum(1), 1, atol=1e-4))
    if is_prob:
        return out
    e = np.exp(out - out.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _grid(X: np.ndarray, bounds: Sequence[float] | None, resolution: int) -> tuple:
    if bounds is None:
        lo, hi = X.min(0), X.max(0)
        margin = 0.15 * np.maximum(hi - lo, 1e-3)
        bounds = (lo[0] - margin[0], hi[0] + margin[0], lo[1] - margin[1], hi[1] + margin[1])
    x0, x1, y0, y1 = (float(b) for b in bounds)
    xx, yy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    return xx, yy


def _class_colors(k: int) -> Any:
    from matplotlib.colors import ListedColormap
    from matplotlib import colormaps

    return ListedColormap(colormaps["tab10"].colors[:k] if k <= 10
                          else colormaps["tab20"](np.linspace(0, 1, k)))


def plot_decision_boundary(model: Callable, X: Any, y: Any = None, ax: Any = None,
                           path: str | os.PathLike | None = None, resolution: int = 200,
                           bounds: Sequence[float] | None = None, output: str = "auto",
                           title: str | None = None) -> Any:
    """A 2-D classifier's decision regions with the data on top; returns the Axes.

    The model is evaluated on a ``resolution``² grid (in eval mode, under
    ``no_grad``; the training flag is restored). One output per point is a
    binary classifier: drawn as a filled contour of P(class 1) with the 0.5
    line. K > 1 outputs: each point takes the colour of its arg-max class.
    ``output``: 'logits' (sigmoid / softmax applied), 'probs', or 'auto'
    (probabilities if every value is in [0, 1] and, for K > 1, rows sum to 1).
    ``bounds``: (xmin, xmax, ymin, ymax); default: the data's range plus 15%.

    >>> ax = plot_decision_boundary(model, X, y, path="boundary.png")
    """
    X = _numpy(X).astype(np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary: X must have shape (N, 2), got {X.shape}")
    if resolution < 2:
        raise ValueError(f"plot_decision_boundary: resolution must be >= 2, got {resolution}")
    xx, yy = _grid(X, bounds, resolution)
    probs = _probabilities(_evaluate(model, np.c_[xx.ravel(), yy.ravel()]), output)
    ax = _axes_or_new(ax, 5.4, 4.5)
    if probs.shape[1] == 2:
        _binary_regions(ax, xx, yy, probs[:, 1].reshape(xx.shape))
        cmap, limits = "RdBu_r", (0, 1)
    else:
        k = probs.shape[1]
        _class_regions(ax, xx, yy, probs.argmax(1).reshape(xx.shape), k)
        cmap, limits = _class_colors(k), (-0.5, k - 0.5)
    if y is None:
        ax.scatter(X[:, 0], X[:, 1], c="k", s=18)
    else:
        ax.scatter(X[:, 0], X[:, 1], c=_numpy(y).reshape(-1), cmap=cmap, vmin=limits[0],
                   vmax=limits[1], edgecolors="k", linewidths=1, s=28 if len(X) > 50 else 80)
    ax.set(xlim=(xx.min(), xx.max()), ylim=(yy.min(), yy.max()), xlabel="$x_1$",
           ylabel="$x_2$", title=title or "")
    _finish(ax.figure, path)
    return ax


def _binary_regions(ax: Any, xx: np.ndarray, yy: np.ndarray, p: np.ndarray) -> None:
    filled = ax.contourf(xx, yy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
    if p.min() < 0.5 < p.max():
        ax.contour(xx, yy, p, levels=[0.5], colors="k", linewidths=1.5)
    ax.figure.colorbar(filled, ax=ax, label="P(class 1)")


def _class_regions(ax: Any, xx: np.ndarray, yy: np.ndarray, cls: np.ndarray, k: int) -> None:
    levels = np.arange(k + 1) - 0.5
    ax.contourf(xx, yy, cls, levels=levels, cmap=_class_colors(k), alpha=0.45)
    ax.contour(xx, yy, cls, levels=levels[1:-1], colors="k", linewidths=0.8)


# ------------------------------------------------------------ mosaics
def _mosaic(tiles: np.ndarray, ncols: int, gap: int, fill: float) -> np.ndarray:
    """Tiles (N, h, w[, 3]) laid out on an nrows x ncols grid with ``gap`` pixels between."""
    n, h, w = tiles.shape[:3]
    nrows = math.ceil(n / ncols)
    channels = tiles.shape[3:]
    # Pad every tile (and the missing ones) with the gap, then interleave rows and columns.
    padded = np.full((nrows * ncols, h + gap, w + gap) + channels, fill, dtype=np.float64)
    padded[:n, :h, :w] = tiles
    grid = padded.reshape((nrows, ncols, h + gap, w + gap) + channels).swapaxes(1, 2)
    canvas = grid.reshape((nrows * (h + gap), ncols * (w + gap)) + channels)
    return canvas[:nrows * (h + gap) - gap, :ncols * (w + gap) - gap]


def _rescale(tiles: np.ndarray, each: bool) -> np.ndarray:
    """Min-max to [0, 1], per tile (``each``) or over all; constant tiles become 0.5."""
    axes = tuple(range(1, tiles.ndim)) if each else None
    lo = tiles.min(axis=axes, keepdims=True)
    span = tiles.max(axis=axes, keepdims=True) - lo
    return np.where(span > 0, (tiles - lo) / np.where(span > 0, span, 1), 0.5)


def _columns(n: int, ncols: int | None) -> int:
    if ncols is not None and ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    return min(n, ncols or math.ceil(math.sqrt(n)))


def _kernels(layer: Any) -> np.ndarray:
    """(N, kh, kw) kernels of the first input channel, or (N, kh, kw, 3) when there are
    exactly 3 input channels (shown as RGB)."""
    weight = _numpy(getattr(layer, "weight", layer)).astype(np.float64)
    if weight.ndim == 3:  # Conv1d: (out, in, k) -> one-row images
        weight = weight[:, :, None, :]
    if weight.ndim != 4:
        raise ValueError(f"plot_filters: expected a conv layer or a 3-D/4-D weight, got a "
                         f"weight of shape {weight.shape}")
    if weight.shape[1] == 3:
        return weight.transpose(0, 2, 3, 1)
    return weight[:, 0]


def plot_filters(conv_layer: Any, ax: Any = None, path: str | os.PathLike | None = None,
                 max_filters: int = 64, ncols: int | None = None, normalize: str = "each",
                 title: str | None = None) -> Any:
    """A grid of a conv layer's kernels (``weight[:, 0]``, or RGB ``weight[:, :3]`` when
    in_channels == 3); returns the Axes.

    ``conv_layer``: a Conv1d/Conv2d (anything with ``.weight``) or the weight itself.
    ``normalize``: 'each' stretches every kernel to the full grey range (shows the
    patterns); 'all' shares one scale (shows which kernels are strong), with a
    colour bar for single-channel kernels.

    >>> ax = plot_filters(model.conv1, path="filters.png")
    """
    if normalize not in ("each", "all"):
        raise ValueError(f"plot_filters: normalize must be 'each' or 'all', got {normalize!r}")
    kernels = _kernels(conv_layer)[:max_filters]
    cols = _columns(len(kernels), ncols)
    rgb = kernels.ndim == 4
    bar = not rgb and normalize == "all"
    shown = _rescale(kernels, normalize == "each") if rgb or normalize == "each" else kernels
    norms = np.sqrt((kernels ** 2).reshape(len(kernels), -1).sum(1))
    ax, image = _draw_tiles(ax, shown, cols, [f"#{i} |w| {n:.2g}" for i, n in enumerate(norms)],
                            tile_inches=min(1.2, 10 / cols), extra_width=1.2 if bar else 0)
    if bar:
        ax.figure.colorbar(image, ax=ax, label="weight")
    ax.set_title(title or f"{len(kernels)} filters, {kernels.shape[1]}×{kernels.shape[2]}")
    _finish(ax.figure, path)
    return ax


def _draw_tiles(ax: Any, tiles: np.ndarray, cols: int, captions: Sequence[str],
                wrong: Sequence[bool] = (), tile_inches: float = 1.2,
                extra_width: float = 0.0) -> tuple[Any, Any]:
    """Tiles in [0, 1] as one image with white gaps, a caption above each (red and bold
    where ``wrong``), on ``ax`` or a new figure sized to fit; returns (Axes, AxesImage)."""
    h, w = tiles.shape[1:3]
    gap = max(1, round(0.35 * h))  # room for a caption above every tile
    fill = 1.0 if tiles.ndim == 4 else np.nan
    canvas = _mosaic(tiles, cols, gap, fill)
    canvas = np.pad(canvas, [(gap, 0), (0, 0)] + [(0, 0)] * (canvas.ndim - 2),
                    constant_values=fill)  # the first row's captions
    width = tile_inches * cols
    ax = _axes_or_new(ax, width + 0.3 + extra_width,
                      width * canvas.shape[0] / canvas.shape[1] + 0.6)
    image = ax.imshow(canvas, cmap=None if tiles.ndim == 4 else _grey_with_white_gaps(),
                      interpolation="nearest")
    for i, text in enumerate(captions):
        r, c = divmod(i, cols)
        bad = i < len(wrong) and wrong[i]
        ax.text(c * (w + gap) + (w - 1) / 2, r * (h + gap) + gap - 0.6, text, ha="center",
                va="bottom", fontsize=7, color="red" if bad else "black",
                fontweight="bold" if bad else "normal")
    ax.set_axis_off()
    return ax, image


def _grey_with_white_gaps() -> Any:
    from matplotlib import colormaps

    return colormaps["gray"].with_extremes(bad="white")  # the NaN gaps between tiles


def _images_hwc(images: Any) -> np.ndarray:
    """(N, H, W) or (N, H, W, 3) from (N, H, W), (N, 1|3, H, W) or (N, H, W, 1|3)."""
    images = _numpy(images).astype(np.float64)
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 and not (images.ndim == 4 and images.shape[-1] == 3):
        raise ValueError(f"plot_samples: expected images (N, H, W), (N, C, H, W) or "
                         f"(N, H, W, C) with C = 1 or 3, got shape {images.shape}")
    return images


def _name(index: Any, class_names: Sequence[str] | None) -> str:
    index = int(index)
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)


def plot_samples(images: Any, labels: Any = None, preds: Any = None,
                 class_names: Sequence[str] | None = None, ax: Any = None,
                 path: str | os.PathLike | None = None, max_images: int = 64,
                 ncols: int | None = None, title: str | None = None) -> Any:
    """A grid of images titled with their labels; with ``preds``, each title is the
    prediction and the wrong ones are red, naming the true class. Returns the Axes.

    Images may be normalised: each is stretched to the full grey/colour range.

    >>> ax = plot_samples(x[:16], y[:16], model(x[:16]).argmax(1), path="samples.png")
    """
    images = _rescale(_images_hwc(images)[:max_images], each=True)
    n = len(images)
    labels = None if labels is None else _numpy(labels).reshape(-1)[:n]
    preds = None if preds is None else _numpy(preds).reshape(-1)[:n]
    cols = _columns(n, ncols)
    captions, wrong = zip(*[_caption(i, labels, preds, class_names) for i in range(n)])
    ax, _ = _draw_tiles(ax, images, cols, captions, wrong, tile_inches=min(1.2, 12 / cols))
    if title:
        ax.set_title(title)
    _finish(ax.figure, path)
    return ax


def _caption(i: int, labels: Any, preds: Any, class_names: Any) -> tuple[str, bool]:
    if preds is None:
        return ("" if labels is None else _name(labels[i], class_names)), False
    guess = _name(preds[i], class_names)
    if labels is None or int(labels[i]) == int(preds[i]):
        return guess, False
    return f"{guess} (true {_name(labels[i], class_names)})", True


# ------------------------------------------------------------ confusion matrix
def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class i predicted as j (int64, K x K).

    >>> confusion_matrix([0, 1, 1], [0, 1, 0]).tolist()
    [[1, 0], [1, 1]]
    """
    y_true = _numpy(y_true).reshape(-1).astype(np.int64)
    y_pred = _numpy(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: y_true and y_pred differ in length "
                         f"({y_true.size} vs {y_pred.size})")
    if y_true.size and min(y_true.min(), y_pred.min()) < 0:
        raise ValueError("confusion_matrix: class indices must be >= 0")
    k = num_classes or int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _normalized(matrix: np.ndarray, normalize: Any) -> np.ndarray:
    """Rows (True or 'true'), columns ('pred') or everything ('all') summing to 1."""
    axis = {True: 1, "true": 1, "pred": 0, "all": None}.get(normalize, "bad")
    if axis == "bad":
        raise ValueError(f"plot_confusion_matrix: normalize must be False, True, 'true', "
                         f"'pred' or 'all', got {normalize!r}")
    totals = matrix.sum(axis=axis, keepdims=axis is not None)
    return matrix / np.where(totals == 0, 1, totals)


def plot_confusion_matrix(y_true: Any, y_pred: Any = None,
                          class_names: Sequence[str] | None = None, normalize: Any = False,
                          ax: Any = None, path: str | os.PathLike | None = None,
                          cmap: str = "Blues", title: str | None = None) -> Any:
    """A confusion matrix as a heat map with the value in every cell; returns the Axes.

    Pass labels and predictions, or a ready K x K matrix as the only argument.
    ``normalize``: True (or 'true') makes rows sum to 1 (per-class recall),
    'pred' columns, 'all' the whole matrix.

    >>> ax = plot_confusion_matrix(labels, preds, class_names=["cat", "dog"], path="cm.png")
    """
    if y_pred is None:
        matrix = _numpy(y_true)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"plot_confusion_matrix: a matrix must be square, got shape "
                             f"{matrix.shape}; or pass y_true and y_pred")
    else:
        k = len(class_names) if class_names is not None else None
        matrix = confusion_matrix(y_true, y_pred, k)
    values = _normalized(matrix, normalize) if normalize is not False else matrix
    k = matrix.shape[0]
    ax = _axes_or_new(ax, 2.2 + 0.55 * k, 1.8 + 0.5 * k)
    image = ax.imshow(values, cmap=cmap, vmin=0)
    ax.figure.colorbar(image, ax=ax)
    if k <= 30:
        _annotate(ax, values, integers=normalize is False)
    names = [_name(i, class_names) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0,
                  ha="right" if max(map(len, names)) > 2 else "center")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    _finish(ax.figure, path)
    return ax


def _annotate(ax: Any, values: np.ndarray, integers: bool) -> None:
    threshold = values.max() / 2 if values.size else 0
    for (i, j), v in np.ndenumerate(values):
        text = f"{int(v)}" if integers else f"{v:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="white" if v > threshold else "black")
