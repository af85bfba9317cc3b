"""ONNX import (sparseinfer/onnx_import.py, docs/onnx.md): graphs written with onnx.helper
(and one through tf2onnx when it is installed), imported, run by the runtime and compared
with onnxruntime on the same .onnx file.

Tolerance: float32 on both sides. Graphs ending in a softmax: |runtime - ort| <= 1e-4 * |ort|
+ 1e-7 per probability (tests.tf_util.assert_close, as in test_tf_equivalence.py), and the
argmax must agree. Graphs ending in logits: max |runtime - ort| <= 1e-4 * max |ort| per
sample (the peer harness's relative error). Failures name the sample and the class.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import sparseinfer  # noqa: E402
from sparseinfer.format import read_manifest  # noqa: E402
from sparseinfer.onnx_import import OnnxImportError, import_onnx  # noqa: E402
from tests.tf_util import assert_close  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 1e-4, 1e-7


# --- graph building -------------------------------------------------------------------

class _Graph:
    """A chain written with onnx.helper: each add() reads the previous output."""

    def __init__(self, rng: np.random.Generator, density: float = 1.0) -> None:
        self.rng, self.density = rng, density
        self.nodes: list = []
        self.inits: list = []
        self.cur = "input"
        self.n = 0

    def const(self, name: str, v: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(v), name))
        return name

    def weight(self, name: str, shape: tuple, fan_in: int, scale: float = 1.0, prune: bool = True) -> str:
        w = self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in) * scale
        if prune and self.density < 1.0:
            w[self.rng.random(shape) >= self.density] = 0.0
            w /= np.sqrt(self.density)
        return self.const(name, w.astype(np.float32))

    def bias(self, name: str, n: int) -> str:
        return self.const(name, (self.rng.standard_normal(n) * 0.1).astype(np.float32))

    def add(self, op: str, *extra: str, inputs: list[str] | None = None, name: str | None = None, **attrs) -> str:
        self.n += 1
        name = name or f"{op.lower()}{self.n}"
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs if inputs is not None else [self.cur, *extra], [out],
                                           name=name, **attrs))
        self.cur = out
        return out

    def conv(self, name: str, cin: int, cout: int, k: int = 3, bias: bool = True, **attrs) -> str:
        w = self.weight(name + "_W", (cout, cin, k, k), cin * k * k)
        extra = [w, self.bias(name + "_B", cout)] if bias else [w]
        return self.add("Conv", *extra, name=name, kernel_shape=[k, k], **attrs)

    def gemm(self, name: str, k: int, n: int, scale: float = 1.0, trans_b: bool = False, **attrs) -> str:
        w = self.weight(name + "_W", (n, k) if trans_b else (k, n), k, scale)
        return self.add("Gemm", w, self.bias(name + "_B", n), name=name, transB=int(trans_b), **attrs)

    def save(self, path, in_shape: list, out_shape: list, opset: int = 17) -> str:
        g = helper.make_graph(self.nodes, "test_graph",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(self.cur, TensorProto.FLOAT, out_shape)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="test_onnx_import")
        m.ir_version = 8
        onnx.checker.check_model(m)
        onnx.save(m, str(path))
        return str(path)


def lenet5_onnx(path, density: float = 1.0, nhwc_input: bool = False, seed: int = 0) -> str:
    """LeNet-5 (conv 5x5x20, pool, conv 5x5x50, pool, fc 500 relu, fc 10 softmax), NCHW.
    With nhwc_input, the input is (N, 28, 28, 1) and a Transpose makes it NCHW, as the peer
    harness and tf2onnx write it."""
    g = _Graph(np.random.default_rng(seed), density)
    if nhwc_input:
        g.add("Transpose", name="to_nchw", perm=[0, 3, 1, 2])
    g.conv("conv1", 1, 20, 5, pads=[0, 0, 0, 0])
    g.add("MaxPool", name="pool1", kernel_shape=[2, 2], strides=[2, 2])
    g.conv("conv2", 20, 50, 5)
    g.add("MaxPool", name="pool2", kernel_shape=[2, 2], strides=[2, 2])
    g.add("Flatten", name="flatten", axis=1)
    g.gemm("fc1", 800, 500)
    g.add("Relu", name="fc1_relu")
    g.gemm("fc2", 500, 10, scale=0.3, trans_b=True)
    g.add("Softmax", name="prob", axis=1)
    in_shape = ["N", 28, 28, 1] if nhwc_input else ["N", 1, 28, 28]
    return g.save(path, in_shape, ["N", 10])


VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


def vgg19_onnx(path, density: float = 1.0, div: int = 8, seed: int = 1) -> str:
    """VGG19's shape (16 convs 3x3 with pads 1 and Relu, 5 max pools, fc6, fc7 with Dropout,
    fc8 and Softmax) on a 224x224x3 NCHW input, every width divided by ``div``."""
    g = _Graph(np.random.default_rng(seed), density)
    cin = 3
    for b, (filters, reps) in enumerate(VGG19_BLOCKS, start=1):
        for i in range(1, reps + 1):
            g.conv(f"conv{b}_{i}", cin, filters // div, 3, pads=[1, 1, 1, 1])
            g.add("Relu", name=f"relu{b}_{i}")
            cin = filters // div
        g.add("MaxPool", name=f"pool{b}", kernel_shape=[2, 2], strides=[2, 2])
    g.add("Flatten", name="flatten")
    g.gemm("fc6", 7 * 7 * cin, 4096 // div)
    g.add("Relu", name="relu6")
    g.add("Dropout", name="drop6")
    g.gemm("fc7", 4096 // div, 4096 // div)
    g.add("Relu", name="relu7")
    g.add("Dropout", name="drop7")
    g.gemm("fc8", 4096 // div, 1000, scale=0.05)
    g.add("Softmax", name="prob")
    return g.save(path, ["N", 3, 224, 224], ["N", 1000])


def run_ort(path: str, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def assert_rel(got: np.ndarray, ref: np.ndarray, what: str, tol: float = 1e-4) -> None:
    """max |got - ref| <= tol * max |ref| in each sample; names the worst sample and class."""
    d = np.abs(got.astype(np.float64) - ref)
    rel = d.max(axis=1) / np.abs(ref).max(axis=1)
    i = int(rel.argmax())
    j = int(d[i].argmax())
    assert rel[i] <= tol, (f"{what}: relative error {rel[i]:.3g} > {tol} at sample {i}, class {j}: "
                           f"got {got[i, j]!r}, onnxruntime {ref[i, j]!r}")


def check_probs(npz: str, onnx_path: str, x_nhwc: np.ndarray, x_onnx: np.ndarray, what: str,
                plan: str = "measure") -> None:
    ref = run_ort(onnx_path, x_onnx)
    got = sparseinfer.load(npz, plan=plan).predict(x_nhwc)
    assert (ref > 1e-3).sum(1).min() >= 2, f"{what}: onnxruntime's output is saturated, test would be weak"
    assert_close(got, ref, RTOL, ATOL, what)
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1), err_msg=f"{what}: argmax differs")


def formats(manifest: dict) -> dict[str, str]:
    return {L["name"]: L["weight"]["format"] for L in manifest["layers"] if "weight" in L}


# --- equivalence with onnxruntime -------------------------------------------------------

@pytest.mark.parametrize("nhwc_input", [False, True], ids=["nchw_input", "nhwc_input_transpose"])
@pytest.mark.parametrize("density", [1.0, 0.1], ids=["dense", "pruned"])
def test_lenet5_matches_onnxruntime(tmp_path, density, nhwc_input):
    src = lenet5_onnx(tmp_path / "lenet5.onnx", density, nhwc_input)
    npz = str(tmp_path / "lenet5.npz")
    manifest = import_onnx(src, npz)
    assert manifest["input"]["shape"] == [28, 28, 1] and manifest["input"]["std"] == [255.0]
    assert [L["type"] for L in manifest["layers"]] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten",
                                                       "dense", "dense"]
    assert [L.get("activation") for L in manifest["layers"] if "weight" in L] == ["linear", "linear", "relu",
                                                                                   "softmax"]
    # pruned: every weight CSR (conv1's 25 taps a row still pay off at 10%); dense: none
    want = "csr" if density < 1 else "dense"
    assert set(formats(manifest).values()) == {want}, formats(manifest)
    x = np.random.default_rng(5).random((8, 28, 28, 1), dtype=np.float32)
    check_probs(npz, src, x, x if nhwc_input else x.transpose(0, 3, 1, 2), f"LeNet-5 density {density}")


@pytest.mark.parametrize("density", [1.0, 0.1], ids=["dense", "pruned"])
def test_vgg19_narrow_matches_onnxruntime(tmp_path, density):
    """VGG19's layers and input size, widths / 8 (the full-size file is the harness figure
    in docs/onnx.md, not a default test)."""
    src = vgg19_onnx(tmp_path / "vgg19.onnx", density)
    npz = str(tmp_path / "vgg19.npz")
    manifest = import_onnx(src, npz)
    assert manifest["input"]["shape"] == [224, 224, 3]
    assert manifest["input"]["crop"] == [224, 224] and manifest["input"]["color"] == "bgr"  # default_input_spec
    assert sum(L["type"] == "conv2d" for L in manifest["layers"]) == 16
    f = formats(manifest)
    if density < 1:
        assert all(f[n] == "csr" for n in ("conv2_1", "conv5_4", "fc6", "fc7", "fc8")), f
    else:
        assert set(f.values()) == {"dense"}, f
    x = (np.random.default_rng(6).random((2, 224, 224, 3), dtype=np.float32) - 0.5) * 2
    # plan "nomeasure": timing every algorithm on 16 convs takes 8 s; which kernel runs is
    # test_tf_equivalence's concern, the import's is the weights and the layout
    check_probs(npz, src, x, np.ascontiguousarray(x.transpose(0, 3, 1, 2)), f"VGG19/8 density {density}",
                plan="nomeasure")


def test_attributes_and_layout_ops(tmp_path):
    """TensorFlow-'same' asymmetric pads, auto_pad SAME_UPPER and VALID, an Add folded into
    a conv bias, a Relu between Transposes (NHWC and back), a PyTorch-style flatten
    (Shape, Gather, Unsqueeze, Concat, Reshape), Dropout, MatMul + Add, Gemm with alpha,
    beta, transB and a (1, N) bias, a separate Softmax."""
    g = _Graph(np.random.default_rng(7))
    g.conv("c1", 3, 6, 3, bias=False, strides=[2, 2], pads=[1, 0, 1, 1])  # 17x16 -> 9x8, TF 'same'
    g.add("Add", g.const("c1_bias", (np.arange(6, dtype=np.float32) * 0.05 - 0.1).reshape(1, 6, 1, 1)), name="c1_add")
    g.add("Relu", name="c1_relu")
    g.add("MaxPool", name="p1", kernel_shape=[2, 2], auto_pad="SAME_UPPER")  # stride 1: 9x8
    g.conv("c2", 6, 8, 3, auto_pad="VALID")  # 7x6
    g.add("Transpose", name="to_nhwc", perm=[0, 2, 3, 1])
    g.add("Relu", name="c2_relu")  # fused into c2 across the transposes
    g.add("Transpose", name="to_nchw", perm=[0, 3, 1, 2])
    g.add("MaxPool", name="p2", kernel_shape=[2, 2], strides=[2, 2])  # 3x3
    pooled = g.cur
    shape = g.add("Shape", inputs=[pooled], name="shape")
    n = g.add("Gather", inputs=[shape, g.const("zero", np.array(0, np.int64))], name="batch", axis=0)
    n1 = g.add("Unsqueeze", inputs=[n, g.const("axes0", np.array([0], np.int64))], name="batch1")
    tgt = g.add("Concat", inputs=[n1, g.const("minus1", np.array([-1], np.int64))], name="target", axis=0)
    g.add("Reshape", inputs=[pooled, tgt], name="view")
    g.add("Dropout", name="drop")
    g.add("MatMul", g.weight("fc1_W", (72, 20), 72), name="fc1")
    g.add("Add", g.bias("fc1_B", 20), name="fc1_add")
    g.add("Relu", name="fc1_relu")
    w = g.weight("fc2_W", (5, 20), 20, scale=0.5)
    g.add("Gemm", w, g.const("fc2_B", (np.random.default_rng(8).standard_normal((1, 5)) * 0.1).astype(np.float32)),
          name="fc2", transB=1, alpha=0.5, beta=2.0)
    g.add("Identity", name="logits")
    g.add("Softmax", name="prob")
    src = g.save(tmp_path / "sink.onnx", ["N", 3, 17, 16], ["N", 5])
    npz = str(tmp_path / "sink.npz")
    manifest = import_onnx(src, npz)
    layers = {L["name"]: L for L in manifest["layers"]}
    assert layers["c1"]["padding"] == "same" and layers["c1"]["strides"] == [2, 2]
    assert layers["c1"]["activation"] == "relu" and layers["c2"]["activation"] == "relu"
    assert layers["p1"]["padding"] == "same" and layers["c2"]["padding"] == "valid"
    assert layers["fc1"]["activation"] == "relu" and layers["fc2"]["activation"] == "softmax"  # across Identity
    assert manifest["input"]["shape"] == [17, 16, 3]
    x = np.random.default_rng(9).random((4, 17, 16, 3), dtype=np.float32)
    check_probs(npz, src, x, np.ascontiguousarray(x.transpose(0, 3, 1, 2)), "attributes graph")


def test_flat_input_mlp(tmp_path):
    """A 2-D (N, features) input: the runtime's input is 1 x 1 x features, no flatten; a
    Relu after a fused Relu and a Softmax after it are layers of their own."""
    g = _Graph(np.random.default_rng(10))
    g.gemm("h", 20, 12)
    g.add("Relu", name="r1")
    g.add("Relu", name="r2")
    g.gemm("out", 12, 4)
    g.add("Relu", name="r3")
    g.add("Softmax", name="prob")
    src = g.save(tmp_path / "mlp.onnx", ["N", 20], ["N", 4])
    npz = str(tmp_path / "mlp.npz")
    manifest = import_onnx(src, npz)
    assert manifest["input"]["shape"] == [1, 1, 20]
    assert [L["type"] for L in manifest["layers"]] == ["dense", "relu", "dense", "softmax"]
    x = np.random.default_rng(11).standard_normal((5, 20)).astype(np.float32)
    got = sparseinfer.load(npz).predict(x.reshape(5, 1, 1, 20))
    assert_rel(got, run_ort(src, x), "MLP probabilities")


def test_tf2onnx_lenet(tmp_path):
    """A Keras LeNet-style model (NHWC) through tf2onnx: its Reshape to NCHW, its
    Shape/Slice/Concat flatten and MatMul + Add; against onnxruntime and Keras."""
    tf = pytest.importorskip("tensorflow")  # the runtime-only install has no TensorFlow
    import keras
    import tf2onnx  # in the test extra: not skipped where TensorFlow is

    keras.utils.set_random_seed(12)
    L = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(6, 5, activation="relu", padding="same"),
                              L.MaxPooling2D(), L.Conv2D(12, 3, strides=2), L.ReLU(), L.MaxPooling2D(padding="same"),
                              L.Flatten(), L.Dense(32, activation="relu"), L.Dropout(0.5),
                              L.Dense(10, activation="softmax")])
    for layer in model.layers:  # non-zero biases, so tf2onnx keeps the Adds
        ws = layer.get_weights()
        if ws:
            layer.set_weights([ws[0], np.random.default_rng(13).standard_normal(ws[1].shape).astype(np.float32) * 0.1])
    spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32, name="input"),)
    src = str(tmp_path / "lenet_tf.onnx")

    @tf.function(input_signature=spec)
    def f(x):
        return model(x, training=False)

    tf2onnx.convert.from_function(f, input_signature=spec, opset=17, output_path=src)
    npz = str(tmp_path / "lenet_tf.npz")
    manifest = import_onnx(src, npz)
    assert manifest["input"]["shape"] == [28, 28, 1]
    x = np.random.default_rng(14).random((6, 28, 28, 1), dtype=np.float32)
    check_probs(npz, src, x, x, "tf2onnx LeNet")
    assert_close(sparseinfer.load(npz).predict(x), model(x, training=False).numpy(), RTOL, ATOL, "tf2onnx vs Keras")


# --- errors -----------------------------------------------------------------------------

def _one_conv(tmp_path, name: str = "bad.onnx", op: str = "Conv", cin: int = 4, **attrs) -> str:
    g = _Graph(np.random.default_rng(15))
    if op == "Conv":
        groups = attrs.get("group", 1)
        g.add("Conv", g.weight("w", (4, cin // groups, 3, 3), 9), name="the_conv", kernel_shape=[3, 3], **attrs)
    else:
        g.add(op, name="the_node", **attrs)
    g.add("Flatten")
    g.add("MatMul", g.weight("fc", (4 * 6 * 6, 3), 144))
    return g.save(tmp_path / name, ["N", cin, 8, 8], ["N", 3])


@pytest.mark.parametrize("attrs, message", [
    ({"group": 2}, "node 'the_conv' (Conv): group 2 is not supported"),
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, "node 'the_conv' (Conv): dilations [2, 2] are not supported"),
    ({"pads": [2, 2, 0, 0]}, "node 'the_conv' (Conv): pads [2, 2, 0, 0] cannot be expressed"),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, "node 'the_conv' (Conv): auto_pad SAME_LOWER with uneven padding"),
])
def test_unsupported_conv_attributes(tmp_path, attrs, message):
    src = _one_conv(tmp_path, **attrs)
    out = tmp_path / "out.npz"
    with pytest.raises(OnnxImportError, match=re.escape(message)):
        import_onnx(src, out)
    assert not out.exists()


def test_unsupported_operator_names_node(tmp_path):
    """An LSTM node: the error names it and its type; the CLI exits 1 and writes nothing."""
    g = _Graph(np.random.default_rng(16))
    g.add("Flatten")
    g.nodes.append(helper.make_node("LSTM", [g.cur, g.weight("W", (1, 16, 12), 12), g.weight("R", (1, 16, 4), 4)],
                                    ["lstm_y"], name="my_lstm", hidden_size=4))
    g.cur = "lstm_y"
    src = g.save(tmp_path / "lstm.onnx", ["N", 3, 2, 2], [1, 1, "N", 4])
    with pytest.raises(OnnxImportError, match=r"node 'my_lstm' \(LSTM\): operator LSTM is not supported"):
        import_onnx(src, tmp_path / "lstm.npz")
    out = tmp_path / "lstm.npz"
    out.write_bytes(b"previous")  # an existing output stays untouched
    p = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "import", src, "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "error:" in p.stderr and "my_lstm" in p.stderr and "LSTM" in p.stderr, p.stderr
    assert out.read_bytes() == b"previous"


@pytest.mark.parametrize("op, message", [
    ("Add", "node 'join' (Add): Add is supported only as the bias of the Conv, Gemm or MatMul right before it"),
    ("Relu", "node 'join' (Relu): reads 'r1_out', an earlier tensor of the data path, not 'r2_out'"),
])
def test_branches_refused(tmp_path, op, message):
    """A skip connection (Add of two data tensors) or a node reading an earlier tensor."""
    g = _Graph(np.random.default_rng(17))
    a = g.add("Relu", name="r1")
    g.add("Relu", name="r2")
    g.add(op, inputs=[a, g.cur] if op == "Add" else [a], name="join")
    g.add("Flatten")
    g.add("MatMul", g.weight("fc", (12, 3), 12))
    src = g.save(tmp_path / "skip.onnx", ["N", 3, 2, 2], ["N", 3])
    with pytest.raises(OnnxImportError, match=re.escape(message)):
        import_onnx(src, tmp_path / "skip.npz")


@pytest.mark.parametrize("keep", [0, 200, 0.5])
def test_truncated_file(tmp_path, keep):
    """Cut to nothing, inside the node list, inside the weights: an error naming the file."""
    src = lenet5_onnx(tmp_path / "lenet5.onnx")
    with open(src, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    out = tmp_path / "cut.npz"
    with pytest.raises(OnnxImportError, match=r"cut\.onnx: not a (readable|valid) ONNX model \(truncated"):
        import_onnx(str(cut), out)
    p = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "import", str(cut), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "truncated or corrupt" in p.stderr, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["cut.onnx", "lenet5.onnx"]  # no output, no temporary file


def test_missing_onnx_package(tmp_path, monkeypatch, capsys):
    from sparseinfer.cli import main
    src = lenet5_onnx(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert main(["import", src, "--out", str(tmp_path / "m.npz"), "--quiet"]) == 1
    assert "pip install 'sparseinfer[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


# --- the command line -------------------------------------------------------------------

def test_cli_import_without_tensorflow(tmp_path):
    """``sparseinfer import X.onnx --out Y.npz`` writes the file, with neither TensorFlow
    nor prune/ imported, and the result runs like onnxruntime."""
    src = lenet5_onnx(tmp_path / "lenet5.onnx", density=0.1, nhwc_input=True)
    out = tmp_path / "lenet5.npz"
    code = ("import sys; from sparseinfer.cli import main; rc = main(sys.argv[1:]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'prune')]; "
            "assert not bad, bad; sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "import", src, "--out", str(out)], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "done:" in p.stdout and "CSR: conv1, conv2, fc1, fc2" in p.stdout, p.stdout
    assert read_manifest(out)["name"] == "test_graph"
    x = np.random.default_rng(18).random((3, 28, 28, 1), dtype=np.float32)
    check_probs(str(out), src, x, x, "CLI import")
