"""Data loading: datasets, the DataLoader, transforms and augmentations, MNIST, CIFAR-10 and
CSV readers, seeded toy data sets (``ember.data.toy``).

>>> from ember.data import DataLoader
>>> from ember.data.datasets import MNIST
>>> from ember.data.transforms import ToTensor
>>> loader = DataLoader(MNIST(sample=True, transform=ToTensor()), batch_size=64, shuffle=True)
>>> images, labels = next(iter(loader))
>>> images.shape, labels.dtype
((64, 1, 28, 28), dtype('int64'))
"""

from ember.data import datasets, toy, transforms
from ember.data.collate import default_collate
from ember.data.dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from ember.data.loader import DataLoader, batch_generator

__all__ = ["Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split", "DataLoader",
           "default_collate", "batch_generator", "datasets", "transforms", "toy"]
