"""The public C API from a C program: examples/classify.c built against the installed
libsparseinfer.so with the flags `sparseinfer config` prints, checked against the Python
binding on a LeNet-5-like model with random weights (one layer stored as CSR)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import sparseinfer
from sparseinfer.format import write_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "classify.c")

pytestmark = pytest.mark.usefixtures("c_tools")


def _config(*flags: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "config", *flags],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


@pytest.fixture(scope="module")
def classify(tmp_path_factory) -> str:
    exe = str(tmp_path_factory.mktemp("classify") / "classify")
    cmd = ["cc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", EXAMPLE, *_config("--cflags", "--libs"),
           "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}{r.stderr}"
    return exe


def _lenet_layers(rng: np.random.Generator) -> list[dict]:
    def he(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * np.sqrt(2.0 / cols)).astype(np.float32)

    fc1 = he(500, 4 * 4 * 50)
    fc1[rng.random(fc1.shape) >= 0.10] = 0.0  # ~10% density, stored as CSR
    fc1 /= np.sqrt(0.10)
    return [
        {"name": "conv1", "type": "conv2d", "kernel": [5, 5], "W": he(20, 5 * 5 * 1),
         "b": rng.standard_normal(20).astype(np.float32) * 0.1},
        {"name": "pool1", "type": "maxpool2d", "pool": [2, 2]},
        {"name": "conv2", "type": "conv2d", "kernel": [5, 5], "W": he(50, 5 * 5 * 20),
         "b": rng.standard_normal(50).astype(np.float32) * 0.1},
        {"name": "pool2", "type": "maxpool2d", "pool": [2, 2]},
        {"name": "flatten", "type": "flatten"},
        {"name": "fc1", "type": "dense", "activation": "relu", "W": fc1,
         "b": rng.standard_normal(500).astype(np.float32) * 0.1},
        {"name": "fc2", "type": "dense", "activation": "softmax", "W": he(10, 500),
         "b": rng.standard_normal(10).astype(np.float32) * 0.1},
    ]


@pytest.fixture(scope="module")
def lenet(tmp_path_factory) -> str:
    rng = np.random.default_rng(1234)
    path = str(tmp_path_factory.mktemp("model") / "lenet.npz")
    # storage="auto" keeps the convolutions dense and stores fc1 (10% dense) as CSR.
    write_model(path, _lenet_layers(rng), {"shape": [28, 28, 1]}, classes=[str(i) for i in range(10)],
                name="lenet-random")
    return path


@pytest.fixture(scope="module")
def lenet_int8(lenet, tmp_path_factory) -> str:
    """The same model quantized (issue 12): the C API's input and output stay float32."""
    path = str(tmp_path_factory.mktemp("model8") / "lenet_int8.npz")
    x = np.random.default_rng(99).uniform(-1.0, 2.0, size=(64, 28, 28, 1)).astype(np.float32)
    sparseinfer.quantize(lenet, path, calibration=x, progress=None)
    return path


@pytest.fixture(scope="module")
def lenet_compact(lenet, tmp_path_factory) -> str:
    """The same model in compact storage (issue 15): 4-bit shared weights, deflated members."""
    path = str(tmp_path_factory.mktemp("modelc") / "lenet_compact.npz")
    sparseinfer.compress(lenet, path, values="kmeans:16")
    return path


@pytest.fixture(scope="module")
def lenet5_compressed() -> str:
    return os.path.join(ROOT, "models", "lenet5_compressed.npz")


def test_model_storage(lenet):
    storage = {l["name"]: l["storage"] for l in sparseinfer.load(lenet).layers()}
    assert storage["fc1"] == "csr", storage
    assert storage["conv1"] == storage["conv2"] == storage["fc2"] == "dense", storage


def _parse(stdout: str, batch: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    lines = stdout.splitlines()
    assert len(lines) == batch, f"expected {batch} lines, got {len(lines)}:\n{stdout}"
    idx, probs = [], []
    for s, line in enumerate(lines):
        fields = line.split()
        assert len(fields) == 1 + n_out, f"sample {s}: {len(fields)} fields, expected {1 + n_out}: {line!r}"
        idx.append(int(fields[0]))
        probs.append([float(v) for v in fields[1:]])
    return np.array(idx), np.array(probs, dtype=np.float64)


@pytest.mark.parametrize("model", ["lenet", "lenet_int8", "lenet_compact", "lenet5_compressed"])
@pytest.mark.parametrize("from_memory", [False, True], ids=["file", "memory"])
@pytest.mark.parametrize("batch", [1, 8])
def test_classify_matches_python(classify, request, model, tmp_path, batch, from_memory):
    lenet = request.getfixturevalue(model)
    rng = np.random.default_rng(batch)
    x = rng.uniform(-1.0, 2.0, size=(batch, 28, 28, 1)).astype(np.float32)
    inp = tmp_path / "x.f32"
    inp.write_bytes(x.astype("<f4").tobytes())
    cmd = [classify] + (["--from-memory"] if from_memory else []) + [lenet, str(inp), str(batch)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stderr}"
    assert r.stderr == ""

    expected = sparseinfer.load(lenet).predict(x).astype(np.float64)
    idx, got = _parse(r.stdout, batch, expected.shape[1])
    for s in range(batch):
        for j in range(expected.shape[1]):
            e, g = expected[s, j], got[s, j]
            assert abs(g - e) <= 1e-5 * abs(e) + 1e-12, (
                f"sample {s}, element {j}: C printed {g!r}, Python predict gave {e!r}")
        assert idx[s] == int(np.argmax(got[s])), f"sample {s}: printed argmax {idx[s]}, probabilities say {np.argmax(got[s])}"
        assert idx[s] == int(np.argmax(expected[s])), f"sample {s}: argmax {idx[s]} != Python's {np.argmax(expected[s])}"
        assert abs(got[s].sum() - 1.0) < 1e-5, f"sample {s}: probabilities sum to {got[s].sum()}"


@pytest.mark.parametrize("from_memory", [False, True], ids=["file", "memory"])
def test_classify_reports_errors(classify, tmp_path, from_memory):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip archive at all, just some text....")
    inp = tmp_path / "x.f32"
    inp.write_bytes(b"\0" * 4 * 28 * 28)
    cmd = [classify] + (["--from-memory"] if from_memory else []) + [str(bad), str(inp), "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stdout == ""
    assert "invalid model file" in r.stderr and "end-of-central-directory" in r.stderr, r.stderr

    missing = tmp_path / "missing.npz"
    r = subprocess.run([classify, str(missing), str(inp), "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "I/O error" in r.stderr and "missing.npz" in r.stderr, r.stderr


def test_classify_wrong_input_size(classify, lenet, tmp_path):
    inp = tmp_path / "x.f32"
    inp.write_bytes(b"\0" * (4 * 28 * 28 - 4))
    r = subprocess.run([classify, lenet, str(inp), "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "expected" in r.stderr, r.stderr


def test_shared_library_exports_only_si_symbols():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm not available")
    (libdir,) = _config("--libdir")
    lib = os.path.join(libdir, "libsparseinfer.so")
    r = subprocess.run([nm, "-D", "--defined-only", lib], capture_output=True, text=True, check=True)
    names = [line.split()[-1] for line in r.stdout.splitlines() if len(line.split()) >= 3]
    assert "si_model_load_file" in names and "si_run" in names, names
    foreign = [n for n in names if not n.startswith("si_")]
    assert not foreign, f"libsparseinfer.so exports non-si_ symbols: {foreign}"


def test_header_compiles_beside_system_headers(tmp_path):
    """The public header must not clash with the usual system headers (glibc's <signal.h>
    defines si_status, si_code, si_pid... as macros for siginfo_t fields)."""
    src = tmp_path / "clash.c"
    src.write_text("#define _GNU_SOURCE\n#include <signal.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
                   "#include <sys/wait.h>\n#include <pthread.h>\n#include <sparseinfer.h>\n"
                   "int main(void) { si_status_t s = SI_OK; puts(si_status_str(s)); return 0; }\n")
    exe = tmp_path / "clash"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", str(src), "-o", str(exe),
                    *_config("--cflags", "--libs")], check=True, capture_output=True, text=True)
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip() == "ok"
