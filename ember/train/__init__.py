"""Training made short: the Trainer, its callbacks, metrics, History and checkpoints.

>>> from ember.train import Trainer, EarlyStopping, ModelCheckpoint
>>> trainer = Trainer(model, F.cross_entropy, ember.optim.Adam(model.parameters()),
...                   train_loader=train, val_loader=val,
...                   callbacks=[EarlyStopping(patience=2),
...                              ModelCheckpoint("runs/last.safetensors")])
>>> history = trainer.fit(10)                      # or fit(10, resume_from="runs/last...")
>>> history.history["val_loss"]
"""

from ember.train.callbacks import (Callback, CSVLogger, EarlyStopping, ModelCheckpoint,
                                   ProgressBar, TerminateOnNaN)
from ember.train.checkpoint import read_checkpoint
from ember.train.history import History
from ember.train.metrics import Accuracy, FunctionMetric, Metric, TopK
from ember.train.trainer import Trainer

__all__ = ["Trainer", "History", "Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "TerminateOnNaN", "ProgressBar", "Metric", "Accuracy", "TopK", "FunctionMetric",
           "read_checkpoint"]
