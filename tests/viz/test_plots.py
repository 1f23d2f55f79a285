"""Training plots: each writes a PNG of at least 10 KB that is not blank, and draws the
numbers it was given."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.data import toy
from ember.viz import (confusion_matrix, plot_confusion_matrix, plot_decision_boundary,
                       plot_filters, plot_history, plot_samples)

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402

HISTORY = {"loss": [1.2, 0.7, 0.45, 0.3], "val_loss": [1.3, 0.8, 0.6, 0.55],
           "accuracy": [0.5, 0.7, 0.8, 0.9], "val_accuracy": [0.45, 0.65, 0.7, 0.75],
           "lr": [0.1, 0.05, 0.01, 0.001]}


def assert_png(path: os.PathLike) -> None:
    """At least 10 KB, and pixels that vary (not a blank canvas)."""
    assert os.path.getsize(path) >= 10_000, f"{path}: {os.path.getsize(path)} bytes"
    pixels = imread(path)[..., :3]
    assert pixels.var() > 1e-3, f"{path} looks blank (pixel variance {pixels.var():.2e})"
    assert [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".part")] == []


def test_blank_figures_fail_the_png_check(tmp_path):
    fig = Figure(figsize=(6, 4))
    fig.add_subplot().set_axis_off()
    fig.savefig(tmp_path / "blank.png")
    with pytest.raises(AssertionError):
        assert_png(tmp_path / "blank.png")


# ---------------------------------------------------------------- history
def test_plot_history_draws_each_series_in_its_panel(tmp_path):
    fig = plot_history(HISTORY, path=tmp_path / "history.png")
    assert_png(tmp_path / "history.png")
    loss_ax, acc_ax, lr_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["loss", "val_loss"]
    assert [line.get_label() for line in acc_ax.lines] == ["accuracy", "val_accuracy"]
    np.testing.assert_array_equal(loss_ax.lines[1].get_ydata(), HISTORY["val_loss"])
    np.testing.assert_array_equal(loss_ax.lines[0].get_xdata(), [1, 2, 3, 4])
    assert lr_ax.get_yscale() == "log" and loss_ax.get_yscale() == "linear"


def test_plot_history_takes_an_object_with_history_and_a_list_of_epochs(tmp_path):
    class Trained:
        history = HISTORY

    from_object = plot_history(Trained())
    epochs = [{k: v[i] for k, v in HISTORY.items()} for i in range(4)]
    from_list = plot_history(epochs, path=tmp_path / "epochs.png")
    assert_png(tmp_path / "epochs.png")
    for a, b in zip(from_object.axes, from_list.axes):
        for line_a, line_b in zip(a.lines, b.lines):
            np.testing.assert_array_equal(line_a.get_ydata(), line_b.get_ydata())


def test_plot_history_of_a_trainer_history_groups_train_and_val():
    train = pytest.importorskip("ember.train")
    history = train.History()
    for epoch in range(3, 6):  # a resumed run: epochs 4 to 6
        history.append(epoch, {"train_loss": 1 / epoch, "val_loss": 1.2 / epoch,
                               "train_accuracy": 0.1 * epoch, "val_accuracy": 0.09 * epoch,
                               "lr": 0.1})
    fig = plot_history(history)
    assert [[line.get_label() for line in ax.lines] for ax in fig.axes] == [
        ["train_loss", "val_loss"], ["train_accuracy", "val_accuracy"], ["lr"]]
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), [4, 5, 6])


def test_plot_history_composes_into_given_axes(tmp_path):
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    assert plot_history(HISTORY, ax=ax) is fig
    assert len(ax.lines) == 4 and len(fig.axes) == 2  # the lr on a twin axis
    with pytest.raises(ValueError, match="3 panels"):
        plot_history(HISTORY, ax=[ax, ax])
    with pytest.raises(TypeError, match="dict of lists"):
        plot_history([1, 2, 3])


# ---------------------------------------------------------------- decision boundary
def test_decision_boundary_of_a_binary_classifier(tmp_path):
    model = nn.Linear(2, 1)
    with ember.no_grad():
        model.weight.copy_(ember.tensor([[4.0, 4.0]]))
        model.bias.fill_(-4.0)  # P(class 1) = sigmoid(4 (x1 + x2 - 1)): the line x1 + x2 = 1
    X, y = toy.logic_gate("OR")
    ax = plot_decision_boundary(model, X, y, resolution=50, bounds=(0, 1, 0, 1),
                                path=tmp_path / "binary.png")
    assert_png(tmp_path / "binary.png")
    boundary = ax.collections[1]  # the filled contour, then the 0.5 line
    points = np.concatenate([p.vertices for p in boundary.get_paths()])
    np.testing.assert_allclose(points.sum(1), 1.0, atol=1e-6)
    assert model.weight.grad is None and model.training  # no graph; mode restored


def test_sigmoid_outputs_and_logits_give_the_same_picture():
    logits = nn.Linear(2, 1)
    probs = nn.Sequential(logits, nn.Sigmoid())
    X, y = toy.two_moons(40, noise=0.1, seed=0)
    a = plot_decision_boundary(logits, X, y, resolution=30)
    b = plot_decision_boundary(probs, X, y, resolution=30)
    np.testing.assert_allclose(a.collections[0].get_array(), b.collections[0].get_array())


def test_decision_boundary_of_a_multiclass_classifier(tmp_path):
    ember.manual_seed(0)
    X, y = toy.blobs(90, centers=3, seed=0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3), nn.Dropout(0.5))
    ax = plot_decision_boundary(model, X, y, path=tmp_path / "multi.png")
    assert_png(tmp_path / "multi.png")
    assert ax.collections[0].get_array().size > 0 and model.training
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        plot_decision_boundary(model, np.zeros((5, 3)), y)


# ---------------------------------------------------------------- filters
@pytest.mark.parametrize("in_channels", [1, 3])
def test_plot_filters_shows_each_kernel_stretched(tmp_path, in_channels):
    ember.manual_seed(0)
    conv = nn.Conv2d(in_channels, 16, 5)
    ax = plot_filters(conv, path=tmp_path / "filters.png")
    assert_png(tmp_path / "filters.png")
    canvas = ax.images[0].get_array()
    gap = 2  # round(0.35 * 5): the caption row above each tile
    weight = conv.weight.detach().numpy().astype(np.float64)
    kernel = weight[5, 0] if in_channels == 1 else weight[5].transpose(1, 2, 0)
    expected = (kernel - kernel.min()) / (kernel.max() - kernel.min())
    row, col = divmod(5, 4)  # 16 kernels on a 4 x 4 grid
    top, left = gap + row * (5 + gap), col * (5 + gap)
    np.testing.assert_allclose(canvas[top:top + 5, left:left + 5], expected, atol=1e-7)
    assert ax.texts[5].get_text() == f"#5 |w| {np.sqrt((kernel ** 2).sum()):.2g}"


def test_plot_filters_shared_scale_has_a_colour_bar_and_rejects_bad_weights():
    ax = plot_filters(nn.Conv1d(1, 8, 5), normalize="all")
    assert len(ax.figure.axes) == 2  # the image and its colour bar
    with pytest.raises(ValueError, match="3-D/4-D weight"):
        plot_filters(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="'each' or 'all'"):
        plot_filters(nn.Conv2d(1, 2, 3), normalize="max")


# ---------------------------------------------------------------- samples
def test_plot_samples_marks_the_wrong_predictions_red(tmp_path):
    data = np.load(os.path.join(os.path.dirname(ember.__file__), "data", "sample",
                                "mnist_sample.npz"))
    images, labels = data["test_images"][:16], data["test_labels"][:16]
    preds = labels.copy()
    preds[[1, 6, 11]] = (labels[[1, 6, 11]] + 1) % 10
    names = [f"digit {i}" for i in range(10)]
    ax = plot_samples(ember.tensor(images[:, None] / 255.0), ember.tensor(labels), preds,
                      class_names=names, path=tmp_path / "samples.png")
    assert_png(tmp_path / "samples.png")
    red = [i for i, t in enumerate(ax.texts) if t.get_color() == "red"]
    assert red == [1, 6, 11]
    assert ax.texts[6].get_text() == f"digit {preds[6]} (true digit {labels[6]})"
    assert ax.texts[0].get_text() == f"digit {labels[0]}"


def test_plot_samples_takes_rgb_in_either_layout(tmp_path):
    rng = np.random.default_rng(0)
    chw = rng.random((12, 3, 16, 16))
    a = plot_samples(chw, np.arange(12) % 10, path=tmp_path / "rgb.png")
    b = plot_samples(chw.transpose(0, 2, 3, 1), np.arange(12) % 10)
    assert_png(tmp_path / "rgb.png")
    np.testing.assert_array_equal(a.images[0].get_array(), b.images[0].get_array())
    assert a.images[0].get_array().shape[-1] == 3
    with pytest.raises(ValueError, match="plot_samples"):
        plot_samples(np.zeros((2, 5, 8, 8)))


# ---------------------------------------------------------------- confusion matrix
def test_confusion_matrix_counts_every_pair():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    expected = np.zeros((4, 4), int)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred), expected)
    assert confusion_matrix([0], [0], num_classes=3).shape == (3, 3)


def test_plot_confusion_matrix_annotates_counts_and_normalises(tmp_path):
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 10, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 10, 300))
    matrix = confusion_matrix(y_true, y_pred)
    ax = plot_confusion_matrix(y_true, y_pred, class_names=[f"c{i}" for i in range(10)],
                               path=tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png")
    assert [int(t.get_text()) for t in ax.texts] == matrix.reshape(-1).tolist()
    ax = plot_confusion_matrix(matrix, normalize=True, path=tmp_path / "cm_norm.png")
    assert_png(tmp_path / "cm_norm.png")
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown.sum(1), 1.0)
    np.testing.assert_allclose(shown, matrix / matrix.sum(1, keepdims=True))
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="normalize"):
        plot_confusion_matrix(matrix, normalize="rows")
