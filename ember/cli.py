"""The ``ember`` command: train from a TOML config, evaluate, predict, summarise.

    ember train configs/quickstart.toml [--set optimizer.lr=0.01 ...] [--resume CKPT]
    ember evaluate runs/quickstart/checkpoint.safetensors [--data DIR]
    ember predict runs/quickstart digit.png more.jpg rows.csv
    ember summary configs/lenet5.toml

``ember train`` writes into the config's output folder: ``config.toml`` (the file as
given), ``run.json`` (the overrides, the seed, the resolved config, the data's
classes and statistics, the results), ``checkpoint.safetensors`` (the last epoch's
full training checkpoint) and ``history.csv``. ``evaluate`` and ``predict`` rebuild the
model and data from that folder. Errors print one line and exit with status 1
(``--traceback`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

RUN_FILE, CONFIG_FILE = "run.json", "config.toml"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


# ---------------------------------------------------------------- parser
_EXAMPLES = """examples:
  ember train configs/quickstart.toml
  ember train configs/lenet5.toml --set optimizer.lr=0.01 --set data.root=~/datasets
  ember evaluate runs/quickstart
  ember predict runs/quickstart digit.png rows.csv
  ember summary configs/cifar_cnn.toml
Each command has its own --help."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember", description="Train, evaluate and inspect ember models from TOML configs.",
        epilog=_EXAMPLES, formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"ember {_version()}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_summary(commands)
    return parser


def _add_train(commands: Any) -> None:
    p = commands.add_parser("train", help="train a model from a TOML config",
                            description="Train the model a TOML config names, then print its "
                            "test accuracy. Writes config.toml, run.json, history.csv and "
                            "checkpoint.safetensors into the config's output folder.",
                            formatter_class=_formatter)
    p.add_argument("config", metavar="CONFIG", help="the TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optimizer.lr=0.01 (a TOML "
                   "value; repeatable)")
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="resume from a training checkpoint (e.g. OUTPUT/checkpoint.safetensors)")
    p.set_defaults(func=cmd_train)


def _add_evaluate(commands: Any) -> None:
    p = commands.add_parser("evaluate", help="accuracy, per-class accuracy, confusion matrix",
                            description="Evaluate a checkpoint written by `ember train` on its "
                            "test set: accuracy, per-class accuracy and the confusion matrix.",
                            formatter_class=_formatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="the checkpoint file, or the run folder holding it")
    p.add_argument("--data", metavar="DIR", help="the data folder to read the test set from "
                   "(for csv data: the test CSV file)")
    p.set_defaults(func=cmd_evaluate)


def _add_predict(commands: Any) -> None:
    p = commands.add_parser("predict", help="classify images or CSV rows",
                            description="Print the top classes with their probabilities for "
                            "each image (PNG, JPEG, ...: converted to the model's size and mode "
                            "when needed) or each row of a CSV file.",
                            formatter_class=_formatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="the checkpoint file, or the run folder holding it")
    p.add_argument("files", metavar="FILES", nargs="+", help="image files and/or CSV files")
    p.add_argument("--top", type=int, default=3, metavar="K", help="classes to show (default 3)")
    p.add_argument("--invert", action="store_true",
                   help="invert grey levels first (dark digits on white paper -> MNIST's look)")
    p.set_defaults(func=cmd_predict)


def _add_summary(commands: Any) -> None:
    p = commands.add_parser("summary", help="layers, output shapes, parameters, FLOPs",
                            description="Print the model a config names, one line per layer: "
                            "output shape, parameters, FLOPs and activation memory.",
                            formatter_class=_formatter)
    p.add_argument("config", metavar="CONFIG", help="the TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (as for train)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="the input batch size for shapes and FLOPs (default 1)")
    p.set_defaults(func=cmd_summary)


# ---------------------------------------------------------------- entry point
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ember")
    except PackageNotFoundError:
        return "0.1.0 (not installed)"


def _one_line(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(str(text).split())
    return text or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("ember: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (every error becomes one clean line)
        if args.traceback or os.environ.get("EMBER_TRACEBACK"):
            raise
        print(f"ember {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- train
def _fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") % 2**31


def _absolute_paths(config: dict) -> None:
    """Data paths as absolute ones, so evaluate/predict work from any folder."""
    data = config["data"]
    for key in ("root", "train_file", "test_file"):
        if key in data:
            data[key] = os.path.abspath(os.path.expanduser(data[key]))


def _write_json(path: str, payload: dict) -> None:
    from ember.serialize import atomic_write
    atomic_write(path, (json.dumps(payload, indent=2) + "\n").encode())


def _check_monitors(config: dict, has_val: bool) -> None:
    """Refuse, before training, callbacks watching val_* metrics when there is no val set."""
    from ember.train.config import ConfigError
    watched = []
    callbacks = config["callbacks"]
    if "early_stopping" in callbacks:
        watched.append(("callbacks.early_stopping.monitor",
                        callbacks["early_stopping"].get("monitor", "val_loss")))
    if callbacks.get("checkpoint", {}).get("save_best_only", True) and "checkpoint" in callbacks:
        watched.append(("callbacks.checkpoint.monitor",
                        callbacks["checkpoint"].get("monitor", "val_loss")))
    if str(config.get("scheduler", {}).get("name", "")).lower() == "reducelronplateau":
        watched.append(("scheduler.monitor", config["scheduler"].get("monitor", "val_loss")))
    for key, monitor in watched:
        if monitor.startswith("val_") and not has_val:
            raise ConfigError(f"{key} is {monitor!r} but there is no validation set: set "
                              "data.val_split (e.g. 0.1) or monitor a train_ metric")


def _run_record(args: argparse.Namespace, config: dict, seed_chosen: bool, data: Any) -> dict:
    import ember
    return {"ember_version": ember.__version__, "command": ["ember", *sys.argv[1:]],
            "config_file": os.path.abspath(args.config), "overrides": list(args.set),
            "seed": config["seed"], "seed_chosen": seed_chosen, "config": config,
            "data": {"classes": data.classes, "input_shape": list(data.input_shape),
                     "image": None if data.image is None else
                     {"mode": data.image.mode, "size": [data.image.height, data.image.width]},
                     "state": data.state, "description": data.description},
            "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _prepare_run(args: argparse.Namespace) -> tuple[dict, str, bool]:
    from ember.train.config import load_config
    config, text = load_config(args.config, args.set)
    seed_chosen = "seed" not in config
    config.setdefault("seed", _fresh_seed())
    config.setdefault("output", os.path.join("runs", Path(args.config).stem))
    _absolute_paths(config)
    return config, text, seed_chosen


def _build_trainer(config: dict, data: Any) -> Any:
    from ember.train import Trainer
    from ember.train import recipe
    model = recipe.build_model(config)
    optimizer = recipe.build_optimizer(config, model)
    scheduler, step, monitor = recipe.build_scheduler(config, optimizer, len(data.train))
    return Trainer(model, recipe.build_loss(config), optimizer, scheduler, data.train,
                   data.val, metrics=config["metrics"], grad_clip=config.get("grad_clip"),
                   callbacks=recipe.build_callbacks(config, config["output"]),
                   scheduler_step=step, monitor_for_plateau=monitor, verbose=config["verbose"])


def _start_record(args: argparse.Namespace, config: dict, text: str, seed_chosen: bool,
                  data: Any) -> dict:
    """Write config.toml (the file as given) and run.json into the output folder."""
    output = config["output"]
    os.makedirs(output, exist_ok=True)
    Path(output, CONFIG_FILE).write_text(text, encoding="utf-8")
    record = _run_record(args, config, seed_chosen, data)
    _write_json(os.path.join(output, RUN_FILE), record)
    return record


def cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    import ember
    from ember.train import recipe
    config, text, seed_chosen = _prepare_run(args)
    ember.manual_seed(config["seed"])
    np.random.seed(config["seed"])
    data = recipe.build_data(config, config["seed"])
    _check_monitors(config, data.val is not None)
    trainer = _build_trainer(config, data)
    record = _start_record(args, config, text, seed_chosen, data)
    _print_plan(config, data, args.resume)
    start = time.perf_counter()
    trainer.fit(config["epochs"], resume_from=args.resume)
    checkpoint = os.path.join(config["output"], recipe.CHECKPOINT_NAME)
    trainer.save_checkpoint(checkpoint)
    results = trainer.evaluate(data.test) if data.test is not None else {}
    _finish_record(record, trainer, results, time.perf_counter() - start, config["output"])
    _print_results(results, data, checkpoint)
    return 0


def _count(loader: Any) -> int:
    return 0 if loader is None else len(loader.dataset)


def _print_plan(config: dict, data: Any, resume: str | None) -> None:
    resuming = f", resuming from {resume}" if resume else ""
    print(f"ember train: {config['model']['name']} on {data.description}: "
          f"{_count(data.train):,} train / {_count(data.val):,} val / {_count(data.test):,} "
          f"test samples, {config['epochs']} epochs, seed {config['seed']}{resuming}",
          flush=True)


def _finish_record(record: dict, trainer: Any, results: dict, seconds: float,
                   output: str) -> None:
    record.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  seconds=round(seconds, 2), epochs_done=trainer.epoch, test=results,
                  history=trainer.history.to_dict())
    _write_json(os.path.join(output, RUN_FILE), record)


def _print_results(results: dict, data: Any, checkpoint: str) -> None:
    if "accuracy" in results:
        print(f"test accuracy: {results['accuracy']:.2%} (loss {results['loss']:.4f}, "
              f"{_count(data.test):,} test samples)")
    elif results:
        print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    print(f"checkpoint: {checkpoint}")


# ---------------------------------------------------------------- loading a run
def _open_run(path: str) -> tuple[str, dict]:
    """(checkpoint file, run.json contents) for a checkpoint file or a run folder."""
    from ember.train.config import ConfigError
    from ember.train.recipe import CHECKPOINT_NAME
    checkpoint = os.path.join(path, CHECKPOINT_NAME) if os.path.isdir(path) else path
    if not os.path.exists(checkpoint):
        raise ConfigError(f"checkpoint {checkpoint} not found")
    run_file = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), RUN_FILE)
    try:
        with open(run_file, encoding="utf-8") as f:
            return checkpoint, json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{run_file} not found: evaluate and predict need the run folder "
                          "`ember train` writes (run.json and config.toml beside the "
                          "checkpoint)") from None


def _load_model(config: dict, checkpoint: str) -> tuple[Any, dict]:
    """The config's model with the checkpoint's weights (CheckpointError on a mismatch)."""
    from ember.serialize import CheckpointError
    from ember.train.checkpoint import model_mismatch, read_checkpoint
    from ember.train.recipe import build_model
    state = read_checkpoint(checkpoint)
    model = build_model(config)
    problem = model_mismatch(state["model"], model)
    if problem:
        raise CheckpointError(f"{checkpoint}: does not match model {config['model']['name']!r} "
                              f"of its run.json: {problem}")
    model.load_state_dict(state["model"])
    return model.eval(), state


# ---------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from ember.train.recipe import build_data
    checkpoint, run = _open_run(args.checkpoint)
    config = run["config"]
    if args.data:
        key = "test_file" if config["data"]["name"] == "csv" else "root"
        config["data"].update({key: os.path.abspath(args.data), "sample": False})
    data = build_data(config, config["seed"], parts=("test",), state=run["data"]["state"])
    model, state = _load_model(config, checkpoint)
    logits, targets = _outputs_and_targets(model, data.test)
    print(f"checkpoint: {checkpoint} ({config['model']['name']}, {state['epoch']} epochs)")
    print(f"test set: {data.description}, {len(targets):,} samples")
    _print_evaluation(logits.argmax(axis=1), targets, run["data"]["classes"])
    return 0


def _outputs_and_targets(model: Any, loader: Any) -> tuple[Any, Any]:
    import numpy as np

    import ember
    outputs, targets = [], []
    with ember.no_grad():
        for inputs, labels in loader:
            outputs.append(model(inputs).array)
            targets.append(np.asarray(labels.array if hasattr(labels, "array") else labels))
    return np.concatenate(outputs), np.concatenate(targets).astype(np.int64)


def _print_evaluation(predicted: Any, targets: Any, classes: list[str]) -> None:
    import numpy as np
    n = len(classes)
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (targets, predicted), 1)
    correct = int(np.trace(matrix))
    print(f"accuracy: {correct / len(targets):.2%} ({correct:,} / {len(targets):,})")
    print("per-class accuracy:")
    names = [name if name.split(" ")[0] == str(i) else f"{i} {name}"
             for i, name in enumerate(classes)]
    width = max(len(name) for name in names)
    for i, name in enumerate(names):
        total = int(matrix[i].sum())
        share = f"{matrix[i, i] / total:7.2%}" if total else "    n/a"
        print(f"  {name:<{width}}  {share}  ({int(matrix[i, i]):,} / {total:,})")
    print("confusion matrix (rows: true class, columns: predicted class):")
    cell = max(4, len(f"{matrix.max():,}") + 1)
    print("    " + "".join(f"{j:>{cell}}" for j in range(n)))
    for i in range(n):
        print(f"  {i:>2}" + "".join(f"{int(v):>{cell},}" for v in matrix[i]))


# ---------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    import ember
    from ember.train.recipe import build_data
    checkpoint, run = _open_run(args.checkpoint)
    config, classes = run["config"], run["data"]["classes"]
    data = build_data(config, config["seed"], parts=(), state=run["data"]["state"])
    model, _ = _load_model(config, checkpoint)
    for label, raw in _inputs(args, config, data):
        batch = data.eval_transform.batch(raw) if data.eval_transform is not None else raw
        with ember.no_grad():
            logits = model(batch if isinstance(batch, ember.Tensor) else ember.tensor(batch))
        probabilities = ember.softmax(logits, dim=1).array
        for name, row in zip(label, probabilities):
            top = np.argsort(-row, kind="stable")[:max(1, min(args.top, len(row)))]
            print(f"{name}: " + " | ".join(f"{classes[k]} {row[k]:.1%}" for k in top))
    return 0


def _inputs(args: argparse.Namespace, config: dict, data: Any) -> Any:
    """(names, raw batch) per file: an image as a batch of one, a CSV file's rows."""
    from ember.train.config import ConfigError
    for file in args.files:
        if not os.path.isfile(file):
            raise ConfigError(f"{file}: no such file")
        suffix = Path(file).suffix.lower()
        if suffix == ".csv":
            rows = _csv_rows(file, config, data)
            yield [f"{file} row {i + 1}" for i in range(len(rows))], rows
        elif suffix in IMAGE_SUFFIXES and data.image is not None:
            yield [file], _load_image(file, data.image, args.invert)[None]
        else:
            kinds = "images (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ") or .csv files" \
                if data.image is not None else ".csv files (this model takes table rows)"
            raise ConfigError(f"{file}: cannot predict on this kind of file; give {kinds}")


def _load_image(path: str, spec: Any, invert: bool) -> Any:
    """An image as a uint8 array of the model's mode and size, converted with a notice."""
    import numpy as np
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise RuntimeError("reading images needs Pillow: pip install pillow (or "
                           "pip install 'ember[cli]')") from None
    try:
        with Image.open(path) as image:
            image.load()
            converted = _converted(image, spec, path)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image Pillow can read") from None
    array = np.asarray(converted, dtype=np.uint8)
    return 255 - array if invert else array


def _converted(image: Any, spec: Any, path: str) -> Any:
    from PIL import Image
    want = (spec.width, spec.height)
    if image.mode == spec.mode and image.size == want:
        return image
    print(f"note: {path}: {image.mode} {image.size[0]}x{image.size[1]} image converted to "
          f"{spec.mode} {want[0]}x{want[1]} (the model's input)", file=sys.stderr)
    image = image.convert(spec.mode)
    if image.size != want:
        image = image.resize(want, Image.Resampling.BILINEAR)
    return image


def _csv_rows(path: str, config: dict, data: Any) -> Any:
    """A CSV file's rows as the model's raw inputs (a 'label'/target column is ignored)."""
    import csv

    import numpy as np

    from ember.data.datasets import CSVDataset
    from ember.train.config import ConfigError
    with open(path, newline="") as f:
        header = [c.strip() for c in next(csv.reader(f), [])]
    target = config["data"]["target"] if data.image is None else "label"
    table = CSVDataset(path, target=target if target in header else None)
    if data.image is None:
        want = data.state["columns"]
        if table.columns != want:
            raise ConfigError(f"{path}: columns {table.columns[:6]}... do not match the "
                              f"training data's {want[:6]}... ({len(want)} feature columns)")
        return table.features
    spec = data.image
    shape = (spec.height, spec.width) + (() if spec.channels == 1 else (spec.channels,))
    if table.features.shape[1] != int(np.prod(shape)):
        raise ConfigError(f"{path}: rows hold {table.features.shape[1]} values; the model takes "
                          f"{spec.mode} {spec.width}x{spec.height} images, {int(np.prod(shape))} "
                          "pixel values (0-255) per row")
    if table.features.min() < 0 or table.features.max() > 255:
        raise ConfigError(f"{path}: pixel values must lie in 0..255")
    return table.features.astype(np.uint8).reshape(len(table.features), *shape)


# ---------------------------------------------------------------- summary
def cmd_summary(args: argparse.Namespace) -> int:
    import ember
    from ember.summary import summary
    from ember.train.config import load_config
    from ember.train.recipe import build_model, input_shape
    config, _ = load_config(args.config, args.set)
    ember.manual_seed(config.get("seed", 0))
    model = build_model(config)
    print(f"{config['model']['name']}:")
    summary(model, (args.batch_size, *input_shape(config)))
    return 0
