"""download=True against a local http.server on 127.0.0.1; these tests never touch the network."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from ember.data.datasets import MNIST, DatasetError, FashionMNIST, download_file, md5sum


class Mirror:
    """A folder served over HTTP on 127.0.0.1, recording every path requested."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep test output quiet
                pass

        handler = functools.partial(Handler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    server = Mirror(served)
    yield server
    server.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_writes_the_files_atomically_and_they_load(tmp_path, mirror, fake_mnist,
                                                           monkeypatch):
    md5s, arrays = fake_mnist(mirror.folder)
    monkeypatch.setattr(MNIST, "md5s", md5s)
    monkeypatch.setattr(MNIST, "mirrors", [mirror.url])
    root = tmp_path / "data"
    ds = MNIST(root, train=True, download=True)
    assert leftovers(root) == sorted(md5s)  # all four files, no temp files
    for name, md5 in md5s.items():
        assert md5sum(root / name) == md5
    np.testing.assert_array_equal(ds.images, arrays["train"][0])
    np.testing.assert_array_equal(ds.labels, arrays["train"][1])
    assert sorted(mirror.requests) == sorted("/" + n for n in md5s)
    test = MNIST(root, train=False, download=True)  # present and valid: nothing fetched again
    assert len(mirror.requests) == 4 and len(test) == 5


def test_md5_mismatch_from_the_server_is_refused_and_leaves_nothing(tmp_path, mirror,
                                                                  fake_mnist, monkeypatch):
    md5s, _ = fake_mnist(mirror.folder)
    tampered = "train-images-idx3-ubyte.gz"
    monkeypatch.setattr(MNIST, "md5s", {**md5s, tampered: "0" * 32})
    monkeypatch.setattr(MNIST, "mirrors", [mirror.url])
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        MNIST(root, download=True)
    message = str(err.value)
    assert tampered in message and "0" * 32 in message and md5s[tampered] in message
    assert tampered not in leftovers(root)
    assert not [n for n in leftovers(root) if n.endswith(".part")]


def test_mirrors_are_tried_in_order(tmp_path, mirror, fake_mnist, monkeypatch):
    md5s, _ = fake_mnist(mirror.folder / "good")
    monkeypatch.setattr(MNIST, "md5s", md5s)
    monkeypatch.setattr(MNIST, "mirrors", [mirror.url + "missing/", mirror.url + "good/"])
    ds = MNIST(tmp_path / "data", train=False, download=True)
    assert len(ds) == 5
    assert "/missing/train-images-idx3-ubyte.gz" in mirror.requests

    monkeypatch.setattr(MNIST, "mirrors", [mirror.url + "missing/", mirror.url + "gone/"])
    with pytest.raises(DatasetError, match=r"(?s)missing/t10k.*404.*gone/t10k.*404"):
        download_file("t10k-labels-idx1-ubyte.gz", tmp_path / "other", md5s[
            "t10k-labels-idx1-ubyte.gz"], MNIST.mirrors)
    assert leftovers(tmp_path / "other") == []


def test_download_replaces_a_corrupt_local_file(tmp_path, mirror, fake_mnist, monkeypatch):
    md5s, arrays = fake_mnist(mirror.folder)
    monkeypatch.setattr(MNIST, "md5s", md5s)
    monkeypatch.setattr(MNIST, "mirrors", [mirror.url])
    root = tmp_path / "data"
    root.mkdir()
    for name in md5s:
        shutil.copy(mirror.folder / name, root / name)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="md5"):
        MNIST(root, train=False)
    ds = MNIST(root, train=False, download=True)
    assert mirror.requests == ["/t10k-labels-idx1-ubyte.gz"]
    np.testing.assert_array_equal(ds.labels, arrays["t10k"][1])


def test_fashion_mnist_uses_its_own_mirrors_and_sums(tmp_path, mirror, fake_mnist,
                                                     monkeypatch):
    md5s, arrays = fake_mnist(mirror.folder, seed=3)
    monkeypatch.setattr(FashionMNIST, "md5s", md5s)
    monkeypatch.setattr(FashionMNIST, "mirrors", [mirror.url])
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/never-used/"])
    ds = FashionMNIST(tmp_path / "fm", train=False, download=True)
    np.testing.assert_array_equal(ds.images, arrays["t10k"][0])


def test_download_without_root_goes_under_ember_data(tmp_path, mirror, fake_mnist,
                                                     monkeypatch):
    md5s, _ = fake_mnist(mirror.folder)
    monkeypatch.setattr(MNIST, "md5s", md5s)
    monkeypatch.setattr(MNIST, "mirrors", [mirror.url])
    monkeypatch.setenv("EMBER_DATA", str(tmp_path / "cache"))
    ds = MNIST(train=False, download=True)
    assert ds.root == tmp_path / "cache" / "mnist" and not ds.is_sample
    assert leftovers(ds.root) == sorted(md5s)


def test_download_of_the_real_files_with_the_official_sums(tmp_path, mirror, mnist_root,
                                                           monkeypatch):
    for name in MNIST.md5s:
        shutil.copy(mnist_root / name, mirror.folder / name)
    monkeypatch.setattr(MNIST, "mirrors", [mirror.url])
    ds = MNIST(tmp_path / "real", train=False, download=True)
    assert len(ds) == 10000 and len(mirror.requests) == 4
    reference = MNIST(mnist_root, train=False)
    np.testing.assert_array_equal(ds.images, reference.images)
