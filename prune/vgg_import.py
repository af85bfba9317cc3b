"""Import pretrained VGG19 weights as a Keras model (for the pruner) and a sparseinfer model file.

    python -m prune.vgg_import WEIGHTS --out MODEL.npz [--allow-pickle]

The format is recognised from the file's first bytes, not its name (docs/vgg19.md):

* ``.npy`` of the TensorFlow VGG port (machrisaa/tensorflow-vgg): ``np.save`` of a dict
  ``{"conv1_1": [W, b], ..., "fc8": [W, b]}``, conv kernels HWIO, fc6 rows in the NHWC
  order of Keras' Flatten. That is a pickle: it is read only with ``allow_pickle=True``
  (``--allow-pickle``), and even then through an unpickler that can build NumPy arrays,
  dicts, lists and strings and nothing else.
* HDF5 in the legacy Keras layout of keras.applications' download
  (``vgg19_weights_tf_dim_ordering_tf_kernels.h5``): root attribute ``layer_names``, one
  group per layer with attribute ``weight_names``; also a legacy full-model ``.h5``
  (the same under ``model_weights``).
* HDF5 in the Keras 3 layout of ``model.save_weights("x.weights.h5")``:
  ``layers/<key>/vars/<i>``.
* A Keras 3 ``.keras`` archive: only its ``model.weights.h5`` is read; the model
  configuration is never deserialised, so nothing in it runs.

Every file is untrusted. All 19 weighted layers must be there with exactly VGG19's shapes,
a floating-point dtype and finite values; layers VGG19 does not have are refused too.
Errors name the file and the layer. The model file appears whole or not at all.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .models import VGG19_BLOCKS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

__all__ = ["VGG19_LAYERS", "VGGImportError", "detect_format", "load_vgg19_weights",
           "keras_vgg19_from_weights", "convert", "main"]


def _vgg19_layers() -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    layers = []
    cin = 3
    for b, (filters, n) in enumerate(VGG19_BLOCKS, start=1):
        for i in range(1, n + 1):
            layers.append((f"block{b}_conv{i}", f"conv{b}_{i}", (3, 3, cin, filters)))
            cin = filters
    # fc6 sees pool5 (7x7x512 for a 224x224 input) flattened in NHWC order
    layers += [("fc1", "fc6", (7 * 7 * cin, 4096)), ("fc2", "fc7", (4096, 4096)),
               ("predictions", "fc8", (4096, 1000))]
    return tuple(layers)


#: VGG19's weighted layers in order: (Keras name, tensorflow-vgg name, kernel shape);
#: each also has a bias of shape (kernel_shape[-1],)
VGG19_LAYERS = _vgg19_layers()

_FORMAT_NAMES = {"npy": "NumPy .npy (tensorflow-vgg dict)", "keras-legacy-h5": "legacy Keras HDF5",
                 "keras-h5": "Keras 3 .weights.h5", "keras": "Keras 3 .keras archive"}
_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
#: the most a .keras archive's weights member may expand to (VGG19 in float32 is 575 MB)
_MAX_WEIGHTS_MEMBER = 4 << 30


class VGGImportError(ValueError):
    """A weight file that cannot be read or is not VGG19; the message names the file."""


def detect_format(path: str | os.PathLike) -> str:
    """``npy``, ``keras-legacy-h5``, ``keras-h5`` or ``keras``, from the file's content."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_ZIP_MAGIC):
        return "keras"
    if head.startswith(_HDF5_MAGIC):
        with _open_h5(path, path) as f:
            return "keras-legacy-h5" if _legacy_root(f) is not None else "keras-h5"
    what = "an empty file" if not head else f"unrecognised content (first bytes {head!r})"
    raise VGGImportError(f"{path}: not a VGG19 weight file: {what}; expected a .npy, an HDF5 "
                         "(.h5) or a .keras (zip) file")


# --- .npy (tensorflow-vgg) ------------------------------------------------------------

# The only globals a pickled dict of NumPy arrays needs (NumPy 1 and 2 spell the module
# differently; Python 2 pickles, like the original vgg19.npy, use the NumPy 1 names).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_SCALAR = np.float32(0).__reduce__()[0]
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves NumPy's array-building functions and refuses every other global, so a
    pickle can make arrays, dicts, lists, tuples, strings and numbers but call nothing."""

    def __init__(self, f: Any, path: str) -> None:
        super().__init__(f, encoding="latin1")  # Python 2 pickles hold array bytes as str
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise VGGImportError(f"{self._path}: the pickle refers to {module}.{name}; only NumPy "
                                 "arrays, dicts and lists are read (nothing that can run code)") from None


def _read_npy(path: str, allow_pickle: bool) -> dict[str, list[Any]]:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy version {version[0]}.{version[1]} not supported")
        except ValueError as e:
            raise VGGImportError(f"{path}: not a readable .npy file (truncated or corrupt?): {e}") from e
        if not dtype.hasobject:
            raise VGGImportError(
                f"{path}: holds a {dtype} array of shape {shape}, not a dict of layers; expected "
                "np.save of {'conv1_1': [W, b], ..., 'fc8': [W, b]} as tensorflow-vgg's vgg19.npy")
        if not allow_pickle:
            raise VGGImportError(
                f"{path}: this .npy holds a pickle (a Python dict, the tensorflow-vgg format), and "
                "loading a pickle can run code; read it only if you trust the file, with "
                "--allow-pickle (Python: allow_pickle=True)")
        try:
            obj = _ArraysOnlyUnpickler(f, path).load()
        except VGGImportError:
            raise
        except Exception as e:  # a damaged pickle fails in many ways; all mean "corrupt"
            raise VGGImportError(f"{path}: the pickle in this .npy is truncated or corrupt "
                                 f"({type(e).__name__}: {e})") from e
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
        obj = obj.reshape(()).item()  # np.save wraps the dict in a 0-d object array
    if not isinstance(obj, dict):
        raise VGGImportError(f"{path}: the pickle holds a {type(obj).__name__}, expected a dict "
                             "{'conv1_1': [W, b], ..., 'fc8': [W, b]} (tensorflow-vgg's vgg19.npy)")
    found: dict[str, list[Any]] = {}
    for key, value in obj.items():
        name = key.decode("latin1") if isinstance(key, bytes) else str(key)
        if isinstance(value, dict) and set(value) == {0, 1}:  # vgg19_trainable.save_npy writes {0: W, 1: b}
            value = [value[0], value[1]]
        if not isinstance(value, (list, tuple)):
            raise VGGImportError(f"{path}: layer {name}: holds a {type(value).__name__}, expected "
                                 "[weights, bias]")
        for i, a in enumerate(value):
            if not isinstance(a, np.ndarray):
                raise VGGImportError(f"{path}: layer {name}: item {i} is a {type(a).__name__}, "
                                     "expected a NumPy array")
        found[name] = list(value)
    return found


# --- HDF5 (legacy Keras and Keras 3) --------------------------------------------------

@contextlib.contextmanager
def _open_h5(path: str, label: str) -> Iterator[Any]:
    """h5py.File for reading; failures to open or to parse are reported against ``label``."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise VGGImportError(f"{label}: cannot open as HDF5 (truncated or corrupt?): {e}") from e
    try:
        yield f
    except (OSError, KeyError, RuntimeError) as e:  # h5py's errors on a damaged file
        raise VGGImportError(f"{label}: corrupt HDF5 file: {e}") from e
    finally:
        f.close()


def _attr_strings(group: Any, name: str, label: str) -> list[str] | None:
    """A Keras list-of-strings attribute (maybe split into name0, name1, ...), or None."""
    attrs = group.attrs
    if name in attrs:
        parts = [attrs[name]]
    elif f"{name}0" in attrs:
        parts, i = [], 0
        while f"{name}{i}" in attrs:
            parts.append(attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    out: list[str] = []
    for part in parts:
        arr = np.asarray(part)
        if arr.size == 0:  # Keras writes an empty float array for a layer without weights
            continue
        for x in arr.ravel():
            if isinstance(x, bytes):
                out.append(x.decode("utf-8"))
            elif isinstance(x, str):
                out.append(x)
            else:
                raise VGGImportError(f"{label}: group {group.name!r}: attribute {name!r} holds "
                                     f"{arr.dtype} values, expected strings")
    return out


def _legacy_root(f: Any) -> Any:
    """The group holding legacy Keras weights (the file, or model_weights of a full model)."""
    import h5py
    for root in (f, f.get("model_weights")):
        if isinstance(root, h5py.Group) and ("layer_names" in root.attrs or "layer_names0" in root.attrs):
            return root
    return None


def _read_legacy_h5(root: Any, label: str) -> dict[str, list[Any]]:
    import h5py
    found: dict[str, list[Any]] = {}
    for lname in _attr_strings(root, "layer_names", label) or []:
        group = root.get(lname)
        if not isinstance(group, h5py.Group):
            raise VGGImportError(f"{label}: layer {lname} is listed in layer_names but has no group")
        arrays = []
        for wname in _attr_strings(group, "weight_names", label) or []:
            ds = group.get(wname)
            if not isinstance(ds, h5py.Dataset):
                raise VGGImportError(f"{label}: layer {lname}: weight {wname!r} is listed in "
                                     "weight_names but missing")
            arrays.append(ds)
        if arrays:
            found[lname] = arrays
    return found


def _suffix(key: str) -> int:
    head, _, tail = key.rpartition("_")
    return int(tail) if head and tail.isdigit() else 0


def _read_keras3_h5(f: Any, label: str) -> dict[str, list[Any]]:
    """``layers/<key>/vars/<i>``. A layer's name is the ``name`` attribute of its vars group
    (recent Keras 3) or else its key; keys are Keras' per-class names (``conv2d``,
    ``conv2d_1``, ...), so when no layer has a name attribute and the keys are exactly 16
    conv2d and 3 dense, they are mapped to VGG19's layers in order."""
    import h5py
    top = f.get("layers")
    if not isinstance(top, h5py.Group):
        top = f.get("_layer_checkpoint_dependencies")  # tf.keras 2.13-2.15 .keras files
    if not isinstance(top, h5py.Group):
        raise VGGImportError(f"{label}: HDF5 file but not Keras weights: no 'layer_names' attribute "
                             "(legacy Keras) and no 'layers' group (Keras 3)")
    found: dict[str, list[Any]] = {}
    keys: dict[str, str] = {}
    named = False
    for key, group in top.items():
        v = group.get("vars") if isinstance(group, h5py.Group) else None
        if not isinstance(v, h5py.Group) or len(v) == 0:
            continue
        if not all(k.isdigit() and isinstance(v[k], h5py.Dataset) for k in v):
            raise VGGImportError(f"{label}: {v.name}: expected datasets 0, 1, ..., found {sorted(v)}")
        name = key
        if "name" in v.attrs:
            a = v.attrs["name"]
            name = a.decode("utf-8") if isinstance(a, bytes) else str(a)
            named = True
        if name in found:
            raise VGGImportError(f"{label}: layer {name} appears twice ({keys[name]} and {key})")
        found[name] = [v[k] for k in sorted(v, key=int)]
        keys[name] = key
    vgg_names = [k for k, _, _ in VGG19_LAYERS]
    convs = sorted((k for k in found if k == "conv2d" or k.startswith("conv2d_")), key=_suffix)
    denses = sorted((k for k in found if k == "dense" or k.startswith("dense_")), key=_suffix)
    if not named and len(convs) == 16 and len(denses) == 3 and len(found) == 19:
        return {new: found[old] for new, old in zip(vgg_names, convs + denses)}
    return found


# --- validation -----------------------------------------------------------------------

def _validate(label: str, found: Mapping[str, Sequence[Any]], npy_names: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Names, counts, shapes and dtypes first (h5py datasets are not read yet), then the
    values: float32 copies, all finite. Every problem found is reported at once."""
    expected = [(npy if npy_names else keras, keras, kshape) for keras, npy, kshape in VGG19_LAYERS]
    known = {name for name, _, _ in expected}
    problems: list[str] = []
    missing = [name for name, _, _ in expected if name not in found]
    if missing:
        problems.append(f"missing layer{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    extra = [name for name in found if name not in known]
    if extra:
        problems.append(f"unknown layer{'s' if len(extra) > 1 else ''} {', '.join(extra)} "
                        "(VGG19 has no such layer)")
    for name, _, kshape in expected:
        if name not in found:
            continue
        arrays = found[name]
        bshape = (kshape[-1],)
        if len(arrays) != 2:
            problems.append(f"layer {name}: {len(arrays)} arrays, expected 2 (kernel {kshape}, bias {bshape})")
            continue
        for what, a, shape in (("kernel", arrays[0], kshape), ("bias", arrays[1], bshape)):
            if tuple(a.shape) != shape:
                problems.append(f"layer {name}: {what} shape {tuple(a.shape)}, expected {shape}")
            elif not np.issubdtype(a.dtype, np.floating):
                problems.append(f"layer {name}: {what} dtype {a.dtype}, expected floating point")
    if problems:
        more = f"; and {len(problems) - 12} more" if len(problems) > 12 else ""
        raise VGGImportError(f"{label}: not VGG19 weights: {'; '.join(problems[:12])}{more}")

    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, keras_name, _ in expected:
        pair = []
        for what, a in zip(("kernel", "bias"), found[name]):
            try:
                v = a[()] if not isinstance(a, np.ndarray) else a
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise VGGImportError(f"{label}: layer {name}: cannot read the {what} "
                                     f"(truncated or corrupt?): {e}") from e
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported below
                v = np.ascontiguousarray(v, dtype=np.float32)
            bad = ~np.isfinite(v)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise VGGImportError(f"{label}: layer {name}: {what} has {int(bad.sum())} non-finite "
                                     f"values in float32 (first at {idx}: {v[idx]})")
            pair.append(v)
        weights[keras_name] = (pair[0], pair[1])
    return weights


@contextlib.contextmanager
def _extract_member(z: zipfile.ZipFile, member: str, label: str) -> Iterator[str]:
    """Copy one zip member to a temporary file (h5py needs a seekable file), removed after."""
    tmp_dir = tempfile.mkdtemp(prefix="vgg_import-")
    try:
        path = os.path.join(tmp_dir, os.path.basename(member))
        try:
            with z.open(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as e:  # incl. a CRC mismatch
            raise VGGImportError(f"{label}: cannot extract (truncated or corrupt?): {e}") from e
        yield path
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def load_vgg19_weights(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """VGG19's weights from any supported file: ``{Keras layer name: (kernel, bias)}``.

    Keys are keras.applications.VGG19's names in order (``block1_conv1`` ...
    ``block5_conv4``, ``fc1``, ``fc2``, ``predictions``); kernels HWIO (conv) or
    (inputs, units) (dense), float32, C-contiguous. ``allow_pickle``: read a ``.npy`` that
    holds a pickle (tensorflow-vgg's dict); without it such a file raises VGGImportError
    before anything is unpickled. Raises VGGImportError (a ValueError) naming the file and
    the layer for anything that is not exactly VGG19, and OSError if the file cannot be opened.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "npy":
        return _validate(path, _read_npy(path, allow_pickle), npy_names=True)
    if fmt in ("keras-legacy-h5", "keras-h5"):
        with _open_h5(path, path) as f:
            root = _legacy_root(f)
            found = _read_legacy_h5(root, path) if root is not None else _read_keras3_h5(f, path)
            return _validate(path, found, npy_names=False)
    member = "model.weights.h5"
    label = f"{path} ({member})"
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise VGGImportError(f"{path}: not a readable .keras (zip) archive (truncated or corrupt?): {e}") from e
    with z:
        try:
            info = z.getinfo(member)
        except KeyError:
            raise VGGImportError(f"{path}: zip archive without {member}: not a Keras 3 .keras model "
                                 f"(members: {', '.join(z.namelist()[:8])})") from None
        if info.file_size > _MAX_WEIGHTS_MEMBER:
            raise VGGImportError(f"{label}: {info.file_size:,} bytes uncompressed, more than the "
                                 f"{_MAX_WEIGHTS_MEMBER:,} any VGG19 needs")
        with _extract_member(z, member, label) as h5path, _open_h5(h5path, label) as f:
            return _validate(label, _read_keras3_h5(f, label), npy_names=False)


def keras_vgg19_from_weights(source: str | os.PathLike | Mapping[str, Sequence[np.ndarray]],
                             allow_pickle: bool = False) -> Any:
    """A ``keras.Model`` VGG19 (prune.models.vgg19: keras.applications' layer names,
    softmax output) holding the given weights bit for bit.

    ``source``: a weight file (read with load_vgg19_weights) or its result.
    """
    from .models import vgg19

    weights = source if isinstance(source, Mapping) else load_vgg19_weights(source, allow_pickle)
    names = [k for k, _, _ in VGG19_LAYERS]
    if sorted(weights) != sorted(names):
        raise VGGImportError(f"weights for layers {sorted(weights)}, expected VGG19's {names}")
    model = vgg19()
    for name in names:
        model.get_layer(name).set_weights(list(weights[name]))
    return model


def convert(path: str | os.PathLike, out: str | os.PathLike, allow_pickle: bool = False,
            progress: Callable[[str], None] | None = None) -> dict:
    """Read VGG19 weights (any supported format) and write a sparseinfer model file.

    The model goes through keras_vgg19_from_weights and sparseinfer.export.export_keras
    with the default VGG input spec (BGR, caffe means, shorter side 256, centre crop 224).
    Everything is read and checked before anything is written; the file is written to a
    temporary file in ``out``'s directory and renamed over ``out`` at the end, so ``out``
    appears whole or not at all (and an existing ``out`` is untouched on any error).
    ``progress``: called with one line per step. Returns the manifest.
    """
    from sparseinfer.export import export_keras

    say = progress or (lambda line: None)
    path, out = os.fspath(path), os.fspath(out)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise VGGImportError(f"{out}: directory {out_dir} does not exist")
    t0 = time.perf_counter()
    fmt = detect_format(path)
    say(f"reading {path}: {_FORMAT_NAMES[fmt]}, {os.path.getsize(path) / 1e6:.0f} MB")
    weights = load_vgg19_weights(path, allow_pickle)
    params = sum(k.size + b.size for k, b in weights.values())
    say(f"checked {len(weights)} layers: shapes of VGG19, finite, {params:,} parameters "
        f"({time.perf_counter() - t0:.1f} s)")
    say("building the Keras VGG19")
    model = keras_vgg19_from_weights(weights)
    del weights  # the model holds its own copy
    say(f"writing {out} (input: BGR minus the caffe means, shorter side 256, centre crop 224)")
    manifest = export_keras(model, out)
    say(f"done: {out}, {os.path.getsize(out) / 1e6:.0f} MB, {time.perf_counter() - t0:.1f} s")
    return manifest


def main(argv: Sequence[str] | None = None, prog: str = "python -m prune.vgg_import") -> int:
    p = argparse.ArgumentParser(
        prog=prog, description="Import pretrained VGG19 weights (tensorflow-vgg .npy, Keras .h5, "
        ".weights.h5 or .keras) as a sparseinfer model file. See docs/vgg19.md.")
    p.add_argument("weights", metavar="WEIGHTS", help="the weight file")
    p.add_argument("--out", required=True, metavar="MODEL.npz", help="the model file to write")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read a .npy that holds a pickle (tensorflow-vgg's vgg19.npy); a pickle can "
                        "run code, so only for files you trust")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)
    progress = None if a.quiet else (lambda line: print(f"{prog}: {line}", flush=True))
    try:
        convert(a.weights, a.out, allow_pickle=a.allow_pickle, progress=progress)
    except (OSError, ValueError) as e:  # VGGImportError and export errors carry the detail
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
