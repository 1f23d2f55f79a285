"""The ``ember`` command line, run as ``python -m ember`` in subprocesses (and, for the
cheaper error paths, through ``ember.cli.main`` in-process).

One tiny training run on the packaged MNIST sample (1,000 images, 1 epoch) is shared
by the evaluate and predict tests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ember.cli import main
from ember.data.datasets import MNIST

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.toml"
TINY = ["--set", "data.train_size=1000", "--set", "data.test_size=300", "--set", "epochs=1",
        "--set", "data.val_split=0.2"]


def ember_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EMBER_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "ember", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["summary"]])
def test_help_for_every_command(command):
    result = ember_cli(*command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: ember")
    for name in command:
        assert f"usage: ember {name}" in result.stdout
    if not command:
        assert all(name in result.stdout for name in ("train", "evaluate", "predict", "summary"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 1-epoch run of the quickstart config on 1,000 sample images."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = ember_cli("train", QUICKSTART, *TINY, "--set", f'output="{out}"')
    assert result.returncode == 0, result.stderr
    (out / "stdout.txt").write_text(result.stdout)
    return out


def test_train_writes_config_run_record_checkpoint_and_prints_accuracy(run):
    lines = (run / "stdout.txt").read_text().strip().splitlines()
    assert lines[0].startswith("ember train: mlp_adam on mnist (packaged sample): 800 train "
                               "/ 200 val / 300 test samples, 1 epochs, seed 0")
    assert lines[1].startswith("epoch 1/1") and "val_accuracy" in lines[1]
    assert lines[-2].startswith("test accuracy: ") and "300 test samples" in lines[-2]
    assert lines[-1] == f"checkpoint: {run / 'checkpoint.safetensors'}"
    assert (run / "config.toml").read_text() == QUICKSTART.read_text()
    record = json.loads((run / "run.json").read_text())
    assert record["overrides"] == [item for item in TINY if item != "--set"] + \
        [f'output="{run}"']
    assert record["seed"] == 0 and not record["seed_chosen"] and record["status"] == "finished"
    assert record["config"]["epochs"] == 1 and record["config"]["data"]["train_size"] == 1000
    accuracy = float(lines[-2].split()[2].rstrip("%")) / 100
    assert record["test"]["accuracy"] == pytest.approx(accuracy, abs=5e-5)
    with open(run / "history.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 2


def test_evaluate_prints_accuracy_per_class_and_confusion_matrix(run):
    result = ember_cli("evaluate", run / "checkpoint.safetensors")
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "run.json").read_text())
    out = result.stdout.splitlines()
    accuracy_line = next(line for line in out if line.startswith("accuracy:"))
    assert f"{record['test']['accuracy']:.2%}" in accuracy_line and "/ 300)" in accuracy_line
    start = out.index("per-class accuracy:")
    assert [line.split()[0] for line in out[start + 1:start + 11]] == [str(i) for i in range(10)]
    matrix_start = next(i for i, line in enumerate(out) if line.startswith("confusion matrix"))
    rows = [list(map(int, line.split()[1:])) for line in out[matrix_start + 2:matrix_start + 12]]
    matrix = np.array(rows)
    assert matrix.shape == (10, 10) and matrix.sum() == 300
    assert np.trace(matrix) == round(record["test"]["accuracy"] * 300)
    labels = MNIST(sample=True, train=False).labels[:300]
    np.testing.assert_array_equal(matrix.sum(1), np.bincount(labels, minlength=10))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    test = MNIST(sample=True, train=False)
    Image.fromarray(test.images[0]).save(folder / "digit.png")          # 28x28 L: as is
    rgb = np.stack([test.images[1]] * 3, axis=-1)
    Image.fromarray(rgb).resize((40, 40)).save(folder / "rgb40.png")   # RGB 40x40: converted
    Image.fromarray(test.images[2]).save(folder / "digit.jpg", quality=95)
    with open(folder / "rows.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label"] + [f"pixel{i}" for i in range(784)])
        for i in range(3, 6):
            writer.writerow([int(test.labels[i])] + test.images[i].reshape(-1).tolist())
    return folder


def test_predict_images_and_csv_rows(run, images):
    result = ember_cli("predict", run, images / "digit.png", images / "rgb40.png",
                       images / "digit.jpg", images / "rows.csv", "--top", "2")
    assert result.returncode == 0, result.stderr
    notices = result.stderr.strip().splitlines()
    assert notices == [f"note: {images / 'rgb40.png'}: RGB 40x40 image converted to L 28x28 "
                       "(the model's input)"]
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        str(images / "digit.png"), str(images / "rgb40.png"), str(images / "digit.jpg"),
        *(f"{images / 'rows.csv'} row {i}" for i in (1, 2, 3))]
    for line in lines:
        top = line.split(": ", 1)[1].split(" | ")
        assert len(top) == 2
        shares = [float(part.rsplit(" ", 1)[1].rstrip("%")) for part in top]
        assert shares[0] >= shares[1] and 0 <= sum(shares) <= 100.1
    labels = MNIST(sample=True, train=False).labels
    # the CSV rows are test images 3..5, read through the same pipeline as the test set
    predicted = [int(line.split(": ")[1].split(" ")[0]) for line in lines[3:]]
    assert sum(p == int(y) for p, y in zip(predicted, labels[3:6])) >= 2


def test_summary_command():
    result = ember_cli("summary", REPO / "configs" / "lenet5.toml")
    assert result.returncode == 0, result.stderr
    assert "Total params: 61,706" in result.stdout and "839,558" in result.stdout


def test_unknown_config_key_is_a_one_line_error(tmp_path):
    line = assert_clean_error(ember_cli("train", QUICKSTART, "--set", "data.batchsize=3",
                                        cwd=tmp_path),
                              "unknown config key 'data.batchsize'", "valid keys in [data]",
                              "batch_size")
    assert line.startswith("ember train: error:")


def test_missing_data_folder_is_a_one_line_error(tmp_path):
    missing = tmp_path / "datasets"
    assert_clean_error(ember_cli("train", QUICKSTART, "--set", "data.sample=false", "--set",
                                 f'data.root="{missing}"', cwd=tmp_path),
                       f"data folder {missing} does not exist", "--set data.download=true",
                       "data.sample=true")
    assert not (tmp_path / "runs").exists()  # nothing written for a run that cannot start


def test_resuming_a_different_architecture_names_the_keys(run, tmp_path):
    result = ember_cli("train", QUICKSTART, *TINY, "--set", "model.name=mlp", "--set",
                       "model.sizes=[784, 32, 10]", "--set", f'output="{tmp_path}"',
                       "--resume", run / "checkpoint.safetensors")
    assert_clean_error(result, "does not match", "1.weight: checkpoint (100, 784) vs model "
                       "(32, 784)", "3.weight: checkpoint (10, 100) vs model (10, 32)")


# ---------------------------------------------------------------- in-process error paths
def _error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_predict_and_evaluate_errors(run, images, tmp_path, capsys):
    bad_csv = tmp_path / "short.csv"
    bad_csv.write_text("a,b\n1,2\n")
    assert "rows hold 2 values; the model takes L 28x28 images, 784" in _error(
        capsys, "predict", run, bad_csv)
    not_image = tmp_path / "fake.png"
    not_image.write_text("hello")
    assert "fake.png: not an image Pillow can read" in _error(capsys, "predict", run, not_image)
    assert "cannot predict on this kind of file" in _error(capsys, "predict", run,
                                                           run / "run.json")
    assert "no such file" in _error(capsys, "predict", run, tmp_path / "nothing.png")
    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes((run / "checkpoint.safetensors").read_bytes())
    assert "run.json not found" in _error(capsys, "evaluate", lonely)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text((run / "run.json").read_text())
    (broken / "checkpoint.safetensors").write_bytes(b"\x00" * 10)
    assert "checkpoint.safetensors: not a safetensors file" in _error(capsys, "evaluate",
                                                                      broken)


def test_train_without_a_seed_chooses_and_records_one(tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('epochs = 1\n[model]\nname = "mlp"\nsizes = [784, 16, 10]\n'
                      '[data]\nsample = true\ntrain_size = 200\ntest_size = 50\n')
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(config), "--set", "verbose=0"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint: runs/c/checkpoint.safetensors" in out
    record = json.loads((tmp_path / "runs" / "c" / "run.json").read_text())
    assert record["seed_chosen"] and isinstance(record["seed"], int)
    assert f"seed {record['seed']}" in out
    assert "callbacks.early_stopping.monitor is 'val_loss' but there is no validation set" in \
        _error(capsys, "train", config, "--set", "callbacks.early_stopping.patience=1")


def _datasets_folder() -> Path | None:
    folder = Path(os.environ.get("EMBER_DATA") or REPO.parent / "shared" / "datasets")
    if (folder / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        return folder
    if os.environ.get("CI") == "true":
        pytest.fail(f"MNIST not found in {folder}/mnist; CI needs ../shared/datasets or "
                    "EMBER_DATA")
    return None


def test_evaluate_with_another_data_folder(run, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert f"data folder {missing} does not exist" in _error(capsys, "evaluate", run,
                                                              "--data", missing)
    folder = _datasets_folder()
    if folder is None:
        pytest.skip("the full MNIST test set is not available")
    assert main(["evaluate", str(run), "--data", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"test set: mnist ({folder / 'mnist'}), 300 samples" in out
    start = next(i for i, line in enumerate(out) if line.startswith("confusion matrix"))
    matrix = np.array([list(map(int, line.split()[1:])) for line in out[start + 2:start + 12]])
    labels = MNIST(folder, train=False).labels[:300]  # the run's data.test_size is 300
    np.testing.assert_array_equal(matrix.sum(1), np.bincount(labels, minlength=10))


def test_csv_data_train_evaluate_predict(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name, n in (("train.csv", 240), ("test.csv", 60)):
        x = rng.normal(loc=50.0, scale=20.0, size=(n, 4))
        y = (x[:, 0] > 50).astype(int) + (x[:, 2] > 50).astype(int)
        rows = "\n".join(",".join([*map(str, r[:2]), str(t), *map(str, r[2:])])
                         for r, t in zip(x, y))
        (tmp_path / name).write_text("f1,f2,label,f3,f4\n" + rows + "\n")
    config = tmp_path / "table.toml"
    config.write_text(f'''seed = 1
epochs = 20
output = "{tmp_path / 'out'}"
verbose = 0
[model]
name = "mlp"
sizes = [4, 16, 3]
[data]
name = "csv"
train_file = "{tmp_path / 'train.csv'}"
test_file = "{tmp_path / 'test.csv'}"
transforms = ["standardize"]
batch_size = 16
[optimizer]
name = "adam"
lr = 0.01
''')
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy: ")[1].split("%")[0])
    assert accuracy > 80  # a separable toy problem, standardized
    assert main(["evaluate", str(tmp_path / "out")]) == 0
    assert f"accuracy: {accuracy:.2f}%" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "out"), str(tmp_path / "test.csv"), "--top", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 60 and lines[0].startswith(f"{tmp_path / 'test.csv'} row 1: ")
    (tmp_path / "other.csv").write_text("f1,f2,f3\n1,2,3\n")
    assert "do not match the training data's" in _error(capsys, "predict", tmp_path / "out",
                                                        tmp_path / "other.csv")
    assert "csv files (this model takes table rows)" in _error(
        capsys, "predict", tmp_path / "out", tmp_path / "table.toml")
