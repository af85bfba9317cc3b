"""The runtime installs and runs without TensorFlow (issue 14): a clean copy of the tracked
files is installed with `pip install "<copy>[onnx,mnist]"` into a fresh virtual environment;
TensorFlow must be absent there, and `sparseinfer run`, `info`, `eval --mnist`, `import` (an
ONNX LeNet-5 written with onnx.helper in that environment) and `bench` must work. The
imported model's predictions are held against the shipped one's within 1e-5 relative.

A few minutes (pip builds the extension and installs MKL), so it runs with the full-size
tests: `python -m pytest -m full_size` (CI runs it)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.full_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# LeNet-5 as an NCHW ONNX graph from the shipped model file's weights, written in the
# runtime-only environment (onnx and numpy only; the file format is read with numpy).
_WRITE_ONNX = r"""
import sys, json
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

src, out = sys.argv[1], sys.argv[2]
z = np.load(src, allow_pickle=False)
manifest = json.loads(z["model.json"].tobytes().decode("utf-8"))
nodes, inits, cur, shape = [], [], "x", None
def init(name, a):
    inits.append(numpy_helper.from_array(np.ascontiguousarray(a, np.float32), name))
for L in manifest["layers"]:
    t, n = L["type"], L["name"]
    if t in ("conv2d", "dense"):
        w = z[n + ".W"] if n + ".W" in z.files else None
        b = z[n + ".b"] if n + ".b" in z.files else None
    if t == "conv2d":
        kh, kw = L["kernel"]
        cin = w.shape[1] // (kh * kw)
        k = w.reshape(w.shape[0], kh, kw, cin).transpose(0, 3, 1, 2)  # (F, kh*kw*C) HWC -> OIHW
        init(n + "_w", k); init(n + "_b", b)
        nodes.append(helper.make_node("Conv", [cur, n + "_w", n + "_b"], [n], kernel_shape=[kh, kw]))
        cur = n
        if L.get("activation") == "relu":
            nodes.append(helper.make_node("Relu", [cur], [n + "_relu"])); cur = n + "_relu"
    elif t == "maxpool2d":
        nodes.append(helper.make_node("MaxPool", [cur], [n], kernel_shape=L["pool"], strides=L.get("strides", L["pool"])))
        cur = n
    elif t == "flatten":
        # the runtime flattens NHWC: transpose to NHWC first so the Gemm weights stay as they are
        nodes.append(helper.make_node("Transpose", [cur], [n + "_nhwc"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Flatten", [n + "_nhwc"], [n])); cur = n
    elif t == "dense":
        init(n + "_w", w); init(n + "_b", b)
        nodes.append(helper.make_node("Gemm", [cur, n + "_w", n + "_b"], [n], transB=1)); cur = n
        act = L.get("activation")
        if act in ("relu", "softmax"):
            nodes.append(helper.make_node(act.capitalize(), [cur], [n + "_" + act])); cur = n + "_" + act
graph = helper.make_graph(nodes, "lenet5", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 28, 28])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [None, 10])], inits)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), out)
"""


def test_runtime_only_install(tmp_path):
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("needs a git checkout (the clean copy is its tracked files)")
    copy = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if os.path.exists(os.path.join(ROOT, rel)):
            os.makedirs(copy / os.path.dirname(rel), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), copy / rel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, bindir = str(venv / "bin" / "python"), venv / "bin"
    p = subprocess.run([py, "-m", "pip", "install", "-q", f"{copy}[onnx,mnist]"], capture_output=True, text=True,
                       timeout=1500)
    assert p.returncode == 0, p.stdout + p.stderr

    def run(*args: str) -> str:
        r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, f"{' '.join(args)}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    r = subprocess.run([py, "-c", "import tensorflow"], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'tensorflow'" in r.stderr, "TensorFlow is installed"
    si = str(bindir / "sparseinfer")
    lenet = os.path.join(ROOT, "models", "lenet5.npz")
    digit = os.path.join(ROOT, "tests", "data", "digits", "digit_7_idx0.png")
    out = run(si, "run", lenet, digit, "--top", "1")
    assert out.split()[1] == "7", out
    info = json.loads(run(si, "info", lenet, "--json"))
    assert [l["name"] for l in info["layers"]][0] == "conv1"
    ev = run(si, "eval", lenet, "--mnist")
    assert "10,000" in ev or "10000" in ev, ev
    onnx_path, imported = tmp_path / "lenet5.onnx", tmp_path / "lenet5_onnx.npz"
    run(py, "-c", _WRITE_ONNX, lenet, str(onnx_path))
    run(si, "import", str(onnx_path), "--out", str(imported))
    check = ("import sys, numpy as np, sparseinfer; "
             "a, b = sparseinfer.load(sys.argv[1]), sparseinfer.load(sys.argv[2]); "
             "x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32); "
             "ya, yb = a.predict(x), b.predict(x); "
             "err = float(np.max(np.abs(ya - yb) / np.abs(ya).max(axis=1, keepdims=True))); "
             "print(err); assert err <= 1e-5 and (ya.argmax(1) == yb.argmax(1)).all(), err")
    run(py, "-c", check, lenet, str(imported))
    bench = json.loads(run(si, "bench", lenet, "--batch", "1,8", "--time", "0.3", "--json"))
    assert [b["batch"] for b in bench["batches"]] == [1, 8]
    print(f"\nruntime-only venv: run -> {out.split()[:2]}; eval: {ev.strip().splitlines()[-1]}; "
          f"bench b1 {bench['batches'][0]['median_ms']:.4f} ms")
