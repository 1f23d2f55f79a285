"""Ready-made datasets: MNIST, Fashion-MNIST (original IDX files, md5-checked), CSV files.

>>> from ember.data.datasets import MNIST
>>> len(MNIST(sample=True))            # the subset shipped with ember, no download
10000
"""

from ember.data.datasets._files import DatasetError, download_file, md5sum
from ember.data.datasets.csvfile import CSVDataset
from ember.data.datasets.idx import read_idx_gz
from ember.data.datasets.mnist import (
    DATA_ENV,
    FASHION_MNIST_MD5,
    FASHION_MNIST_MIRRORS,
    MNIST,
    MNIST_MD5,
    MNIST_MIRRORS,
    SAMPLE_PATH,
    FashionMNIST,
)

__all__ = ["MNIST", "FashionMNIST", "CSVDataset", "DatasetError", "MNIST_MIRRORS",
           "FASHION_MNIST_MIRRORS", "MNIST_MD5", "FASHION_MNIST_MD5", "SAMPLE_PATH", "DATA_ENV",
           "md5sum", "download_file", "read_idx_gz"]
