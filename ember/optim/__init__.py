"""Optimizers and learning-rate schedulers with torch.optim's API.

>>> w = ember.zeros(3, requires_grad=True)
>>> opt = ember.optim.Adam([w], lr=1e-3)
>>> sched = ember.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
>>> sched.get_last_lr()
[0.001]
"""

from ember.optim import lr_scheduler
from ember.optim.adadelta import Adadelta
from ember.optim.adagrad import Adagrad
from ember.optim.adam import Adam, AdamW
from ember.optim.optimizer import Optimizer
from ember.optim.rmsprop import RMSprop
from ember.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "lr_scheduler"]
