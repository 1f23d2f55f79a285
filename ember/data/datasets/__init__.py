"""Ready-made datasets: MNIST, Fashion-MNIST (original IDX files), CIFAR-10 (binary or python
version), all md5-checked; CSV files.

>>> from ember.data.datasets import MNIST
>>> len(MNIST(sample=True))            # the subset shipped with ember, no download
10000
"""

from ember.data.datasets._arrays import ImageArrayDataset
from ember.data.datasets._files import (DatasetError, check_md5, download_file, extract_members,
                                        md5sum, write_atomically)
from ember.data.datasets._pickle import RestrictedUnpickler, UnsafePickleError, restricted_load
from ember.data.datasets.cifar import (
    CIFAR10,
    CIFAR10_BINARY_ARCHIVE_MD5,
    CIFAR10_BINARY_MD5,
    CIFAR10_BINARY_URL,
    CIFAR10_MIRRORS,
    CIFAR10_PYTHON_MD5,
    read_cifar_binary,
)
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

__all__ = ["MNIST", "FashionMNIST", "CIFAR10", "CSVDataset", "ImageArrayDataset", "DatasetError",
           "UnsafePickleError", "MNIST_MIRRORS", "FASHION_MNIST_MIRRORS", "MNIST_MD5",
           "FASHION_MNIST_MD5", "CIFAR10_BINARY_MD5", "CIFAR10_PYTHON_MD5", "CIFAR10_BINARY_URL",
           "CIFAR10_BINARY_ARCHIVE_MD5", "CIFAR10_MIRRORS", "SAMPLE_PATH", "DATA_ENV", "md5sum",
           "check_md5", "download_file", "write_atomically", "extract_members", "read_idx_gz",
           "read_cifar_binary", "RestrictedUnpickler", "restricted_load"]
