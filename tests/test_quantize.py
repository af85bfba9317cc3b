"""int8 quantization (issue 12): sparseinfer.quantize and `sparseinfer quantize` on the shipped
LeNet-5s with real MNIST, every int8 algorithm against an independent NumPy reference of the
integer arithmetic (kernels/tests/make_cases.py: reference_forward_int8), and bad inputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import sparseinfer
from sparseinfer.format import ModelFormatError, read_manifest, write_model
from sparseinfer.quantization import QuantizeError, calibration_images, fake_quant, qparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "kernels", "tests"))
import make_cases  # noqa: E402

MODELS = os.path.join(ROOT, "models")
DIGIT = os.path.join(ROOT, "tests", "data", "digits", "digit_7_idx0.png")
INT8_ALGOS = {"conv2d": ("conv_igemm", "conv_sparse_i8"), "dense": ("fc_igemm", "fc_csrmv_i8", "fc_csrmm_i8")}


@pytest.fixture(scope="module")
def mnist():
    from sparseinfer.datasets import load_mnist
    return load_mnist()


@pytest.fixture(scope="module")
def quantized(mnist, tmp_path_factory):
    """Both shipped LeNet-5s quantized on 1,000 MNIST training images: name -> (fp32, int8, report)."""
    from sparseinfer.preprocess import normalize
    d = tmp_path_factory.mktemp("q")
    x_train = mnist[0]
    idx = np.sort(np.random.default_rng(0).choice(len(x_train), 1000, replace=False))
    out = {}
    for name in ("lenet5", "lenet5_pruned"):
        src = os.path.join(MODELS, name + ".npz")
        x = normalize(x_train[idx][..., None], read_manifest(src)["input"])
        dst = str(d / (name + "_int8.npz"))
        rep = sparseinfer.quantize(src, dst, calibration=x, progress=None)
        out[name] = (src, dst, rep)
    return out


def read_layers_int8(path: str) -> tuple[list[dict], list[int]]:
    """write_model's layer dicts back from a file with NumPy (int8 layers with their quant),
    for the NumPy reference: (layers, input shape)."""
    man = read_manifest(path)
    layers = []
    with np.load(path, allow_pickle=False) as z:
        for e in man["layers"]:
            L = dict(e)
            if e["type"] in ("conv2d", "dense"):
                w = e["weight"]
                if w["format"] == "dense":
                    W = z[w["array"]]
                else:
                    p = w["prefix"]
                    rows, cols = (int(v) for v in z[p + ".shape"])
                    W = np.zeros((rows, cols), z[p + ".data"].dtype)
                    ptr = z[p + ".indptr"].astype(np.int64)
                    W[np.repeat(np.arange(rows), np.diff(ptr)), z[p + ".indices"].astype(np.int64)] = z[p + ".data"]
                L["W"] = W
                L["b"] = None if e.get("bias") is None else z[e["bias"]]
                q = e.get("quant")
                if q:
                    L["quant"] = {"input": (q["input"]["scale"], q["input"]["zero_point"]),
                                  "output": None if q["output"] is None else (q["output"]["scale"], q["output"]["zero_point"]),
                                  "weight_scale": z[q["weight_scale"]]}
            layers.append(L)
    return layers, man["input"]["shape"]


@pytest.mark.parametrize("name", ["lenet5", "lenet5_pruned"])
def test_lenet5_int8_accuracy(quantized, name):
    """The issue's bar: all 10,000 MNIST test images through the C runtime, the int8 error at
    most the fp32 error + 0.10 points; the file smaller; every layer but the last int8."""
    from sparseinfer.evaluation import evaluate_mnist
    src, dst, rep = quantized[name]
    e32 = evaluate_mnist(sparseinfer.load(src))
    q = sparseinfer.load(dst)
    e8 = evaluate_mnist(q)
    err32, err8 = 100 * (1 - e32["accuracy"]), 100 * (1 - e8["accuracy"])
    assert err8 <= err32 + 0.10, f"{name}: int8 test error {err8:.2f}% vs fp32 {err32:.2f}%"
    assert [l["dtype"] for l in q.layers() if l["weight_shape"]] == ["int8", "int8", "int8", "float32"]
    assert rep["kept_fp32"] == ["fc2"]
    assert os.path.getsize(dst) < os.path.getsize(src)
    # agreement with the fp32 model, image by image
    agree = float((e32["predictions"] == e8["predictions"]).mean())
    assert agree >= 0.995, f"{name}: int8 and fp32 agree on {agree:.2%} of the test images"


@pytest.mark.parametrize("name", ["lenet5", "lenet5_pruned"])
def test_every_int8_algorithm_matches_numpy_reference(quantized, mnist, name, monkeypatch):
    """Each int8 entry, forced by SPARSEINFER_ALGO, at batch 1 and 5, and the reference
    kernels: the int8 layers' outputs (Model.trace) are the same bits, and those of the NumPy
    integer reference; the probabilities (after the float fc2) agree to float rounding."""
    from sparseinfer.preprocess import normalize
    _, dst, _ = quantized[name]
    layers, shape = read_layers_int8(dst)
    x = normalize(mnist[2][:5][..., None], read_manifest(dst)["input"])
    int8_idx = [i for i, L in enumerate(layers) if L.get("quant")]
    want = {i: make_cases.reference_forward_int8(layers[:i + 1], x.astype(np.float64)).astype(np.float32)
            for i in int8_idx}
    want_p = make_cases.reference_forward_int8(layers, x.astype(np.float64))

    def check(traces, what):
        for i in int8_idx:
            got = traces[i].reshape(len(x), -1)
            bad = np.argwhere(got != want[i])
            assert bad.size == 0, (f"{name} {what}: layer {layers[i]['name']} differs from the NumPy int8 reference "
                                   f"at (sample, element) {bad[:3].tolist()}: {got[tuple(bad[0])]} vs "
                                   f"{want[i][tuple(bad[0])]}")
        np.testing.assert_allclose(traces[-1].reshape(len(x), -1), want_p, rtol=1e-5, atol=1e-7,
                                   err_msg=f"{name} {what}: probabilities")

    # (exec, SPARSEINFER_ALGO, conv entry, fc entries at batch 1 and above); a regime where no
    # named entry applies keeps its own candidates (fc_igemm_amx: batch > 1 only)
    combos = [("dense", "conv_igemm,fc_igemm", "conv_igemm", ("fc_igemm", "fc_igemm")),
              ("sparse", "conv_sparse_i8,fc_csrmv_i8,fc_csrmm_i8", "conv_sparse_i8", ("fc_csrmv_i8", "fc_csrmm_i8"))]
    probe = sparseinfer.load(dst, plan="nomeasure", cache="").layers()
    if "conv_igemm_amx" in probe[0]["candidates_batch1"]:  # the CPU and the OS have AMX
        combos.append(("dense", "conv_igemm_amx,fc_igemm_amx", "conv_igemm_amx", ("fc_igemm", "fc_igemm_amx")))
    for exec_, force, conv, fc in combos:
        monkeypatch.setenv("SPARSEINFER_ALGO", force)
        m = sparseinfer.load(dst, exec=exec_, cache="")
        algos = {l["name"]: (l["algo_batch1"], l["algo_batchn"]) for l in m.layers() if l["dtype"] == "int8"}
        assert algos == {"conv1": (conv, conv), "conv2": (conv, conv), "fc1": fc}, algos
        one = [np.concatenate(t) for t in zip(*(m.trace(x[i:i + 1]) for i in range(len(x))))]  # batch 1
        check(one, f"{exec_} batch 1")
        check(m.trace(x), f"{exec_} batch 5")
        np.testing.assert_allclose(m.predict(x), want_p, rtol=1e-5, atol=1e-7)
    monkeypatch.delenv("SPARSEINFER_ALGO")
    m = sparseinfer.load(dst, cache="")
    sparseinfer._core.set_reference_kernels(True)
    try:
        check(m.trace(x), "reference kernels")
    finally:
        sparseinfer._core.set_reference_kernels(False)


def infos_of(m) -> list[dict]:
    return [l for l in m.layers() if l["weight_shape"]]


def test_int8_trace_and_uint8_activations(quantized, mnist):
    """Model.trace: int8 layers' outputs (dequantized) sit on their output quantization's grid
    and agree with the fp32 model's within a few steps."""
    from sparseinfer.preprocess import normalize
    src, dst, _ = quantized["lenet5"]
    x = normalize(mnist[2][:8][..., None], read_manifest(src)["input"])
    t32 = sparseinfer.load(src).trace(x)
    q = sparseinfer.load(dst)
    t8 = q.trace(x)
    # trace runs every layer on its own; predict fuses the max pools into the int8 convolutions
    assert infos_of(q)[0]["algo_batchn"].startswith("conv_igemm")
    np.testing.assert_array_equal(t8[-1].reshape(len(x), -1), q.predict(x), err_msg="fused pool vs unfused")
    infos = q.layers()
    for i, l in enumerate(infos):
        if l["dtype"] == "int8" and l["quant"]["output"]:
            s, z = l["quant"]["output"]
            steps = t8[i] / np.float32(s)
            assert np.abs(steps - np.rint(steps)).max() < 1e-3, f"{l['name']}: output not on its uint8 grid"
            assert steps.min() >= -z - 1e-3 and steps.max() <= 255 - z + 1e-3
            diff = np.abs(t8[i] - t32[i])
            assert np.percentile(diff, 99) <= 4 * s, f"{l['name']}: int8 vs fp32 99th percentile {np.percentile(diff, 99)}"


def test_fake_quant_matches_runtime_rule():
    """The quantizer's model of the runtime's rounding: half to even, clamped."""
    s, z = 0.5, 3
    v = np.array([-10, -1.5, -1.25, -0.25, 0.25, 0.75, 1.25, 1000], np.float32)
    np.testing.assert_array_equal(fake_quant(v, s, z), np.array([-1.5, -1.5, -1.0, 0.0, 0.0, 1.0, 1.0, 126.0], np.float32))
    assert qparams(0.0, 2.55) == (pytest.approx(0.01), 0)
    s, z = qparams(-1.0, 3.0)
    assert z == 64 and abs(s - 4 / 255) < 1e-7


def test_quantize_cli_info_run(tmp_path):
    """`sparseinfer quantize` from MNIST, then `info` shows the dtype and `run` classifies."""
    out = tmp_path / "q.npz"
    r = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "quantize", os.path.join(MODELS, "lenet5_pruned.npz"),
                        str(out), "--calibration", "mnist", "--calibration-count", "200", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["calibration_samples"] == 200 and rep["bytes_out"] < rep["bytes_in"]
    assert [l["dtype"] for l in rep["layers"]] == ["int8", "int8", "int8", "float32"]
    r = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "info", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {}
    for line in r.stdout.splitlines():  # the layer table comes first (the plan's table repeats the names)
        if line[:5] in ("conv1", "conv2", "fc1  ", "fc2  "):
            rows.setdefault(line.split()[0], line.split())
    assert "int8" in rows["conv1"] and "int8" in rows["fc1"] and "float32" in rows["fc2"], r.stdout
    r = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "run", str(out), DIGIT, "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["top"][0]["index"] == 7
    # an image as the calibration source, and a bad source
    r = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "quantize", os.path.join(MODELS, "lenet5.npz"),
                        str(tmp_path / "q2.npz"), "--calibration", DIGIT, "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["calibration_samples"] == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "quantize", os.path.join(MODELS, "lenet5.npz"),
                        str(tmp_path / "q3.npz"), "--calibration", str(tmp_path / "nothing")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "not 'mnist', a folder or an image file" in r.stderr


def test_quantize_bad_inputs(tmp_path):
    src = os.path.join(MODELS, "lenet5.npz")
    with pytest.raises(QuantizeError, match="sample shape"):
        sparseinfer.quantize(src, tmp_path / "a.npz", calibration=np.zeros((4, 32, 32, 3), np.float32), progress=None)
    x = np.zeros((4, 28, 28, 1), np.float32)
    x[1, 3, 3, 0] = np.nan
    with pytest.raises(QuantizeError, match="NaN"):
        sparseinfer.quantize(src, tmp_path / "a.npz", calibration=x, progress=None)
    with pytest.raises(QuantizeError, match="no weighted layer named"):
        sparseinfer.quantize(src, tmp_path / "a.npz", calibration=x[:1] * 0, keep_fp32=["nope"], progress=None)
    with pytest.raises(QuantizeError, match="method"):
        sparseinfer.quantize(src, tmp_path / "a.npz", calibration=x[:1] * 0, method="kl", progress=None)
    ok = tmp_path / "ok.npz"
    sparseinfer.quantize(src, ok, calibration=np.zeros((2, 28, 28, 1), np.float32), progress=None)
    with pytest.raises(QuantizeError, match="already int8"):
        sparseinfer.quantize(ok, tmp_path / "b.npz", calibration=np.zeros((2, 28, 28, 1), np.float32), progress=None)
    assert not (tmp_path / "a.npz").exists()


def test_int8_layer_too_wide_is_refused(tmp_path):
    """int32 sums must not overflow: an int8 layer over 66,000 inputs is refused by name."""
    cols = 70000
    W = np.zeros((2, cols), np.int8)
    W[0, 5] = 3
    path = tmp_path / "wide.npz"
    write_model(path, [{"name": "flat", "type": "flatten"},
                       {"name": "wide", "type": "dense", "W": W, "b": np.zeros(2, np.int32),
                        "quant": {"input": (0.1, 0), "output": None, "weight_scale": np.ones(2, np.float32)}}],
                {"shape": [1, cols, 1]})
    with pytest.raises(sparseinfer.SparseInferError, match="layer wide: 70000 inputs per output, more than the 66000"):
        sparseinfer.load(path)


def test_writer_refuses_bad_int8_layers(tmp_path):
    W = np.ones((2, 3), np.int8)
    base = {"name": "d", "type": "dense", "b": np.zeros(2, np.int32),
            "quant": {"input": (0.1, 0), "output": None, "weight_scale": np.ones(2, np.float32)}}
    spec = {"shape": [1, 1, 3]}
    for change, msg in ((dict(W=W.astype(np.float32)), "int8 array"), (dict(W=np.full((2, 3), -128, np.int8)), "-127"),
                        (dict(W=W, b=np.zeros(2, np.float32)), "int32"),
                        (dict(W=W, quant={**base["quant"], "input": (0.0, 0)}), "scale > 0"),
                        (dict(W=W, quant={**base["quant"], "input": (0.1, 300)}), "zero point"),
                        (dict(W=W, quant={**base["quant"], "weight_scale": np.ones(3, np.float32)}), "weight_scale")):
        with pytest.raises(ModelFormatError, match=msg):
            write_model(tmp_path / "x.npz", [{"name": "f", "type": "flatten"}, {**base, **change}], spec)


def test_calibration_images_from_folder(tmp_path):
    import shutil
    d = tmp_path / "imgs" / "sub"
    d.mkdir(parents=True)
    for i in range(3):
        shutil.copy(DIGIT, d / f"d{i}.png")
    spec = read_manifest(os.path.join(MODELS, "lenet5.npz"))["input"]
    x = calibration_images(str(tmp_path / "imgs"), spec, spec["shape"], 2)
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.float32
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(QuantizeError, match="no images"):
        calibration_images(str(empty), spec, spec["shape"], 2)


def test_winograd_dq_on_cpus_without_vnni(tmp_path):
    """conv_winograd_dq (float Winograd on the dequantized layer) applies where the int8 GEMM has
    no VNNI (here: the AVX2 cap with VNNI disabled, in a child process) and gives the int8
    layer's values to within float rounding: good_int8's outputs against the NumPy integer
    reference."""
    layers, shape, storage = make_cases.good_models()["good_int8"]
    path = tmp_path / "g8.npz"
    write_model(path, layers, {"shape": shape}, storage=storage)
    x = np.random.default_rng(3).uniform(-1, 1, (6, *shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    child = ("import sys, json, numpy as np, sparseinfer\n"
             "m = sparseinfer.load(sys.argv[1], cache='')\n"
             "np.save(sys.argv[3], m.predict(np.load(sys.argv[2])))\n"
             "print(json.dumps([l['algo_batch1'] for l in m.layers() if l['weight_shape']]))\n")
    env = dict(os.environ, SPARSEINFER_ISA="avx2", SPARSEINFER_DISABLE="vnni", SPARSEINFER_ALGO="conv_winograd_dq")
    r = subprocess.run([sys.executable, "-c", child, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0] == "conv_winograd_dq", r.stdout
    got = np.load(tmp_path / "y.npy")
    want = make_cases.reference_forward(layers, x.astype(np.float64))
    err = np.abs(got - want)
    assert err.max() <= 2e-3 * np.abs(want).max(), f"max error {err.max()} at {np.unravel_index(err.argmax(), err.shape)}"
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
