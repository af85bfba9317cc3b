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
              ("sparse", "conv_sparse_i8,fc_csrmv_i8,fc_csrmm_i8", "conv_sparse_i8", ("fc_csrmv_i8", "fc_csrmm_i8")),
              # exact int8 on the fp32 samples-innermost kernel: batches > 1 only
              ("sparse", "conv_sparse_batch_i8,fc_csrmv_i8,fc_csrmm_i8", ("conv_sparse_i8", "conv_sparse_batch_i8"),
               ("fc_csrmv_i8", "fc_csrmm_i8")),
              ("sparse", "conv_sparse_batch_i8,fc_csrmv_i8,fc_csrmm_f32_i8", ("conv_sparse_i8", "conv_sparse_batch_i8"),
               ("fc_csrmv_i8", "fc_csrmm_f32_i8"))]
    probe = sparseinfer.load(dst, plan="nomeasure", cache="").layers()
    if "conv_igemm_amx" in probe[0]["candidates_batch1"]:  # the CPU and the OS have AMX
        combos.append(("dense", "conv_igemm_amx,fc_igemm_amx", "conv_igemm_amx", ("fc_igemm", "fc_igemm_amx")))
    for exec_, force, conv, fc in combos:
        monkeypatch.setenv("SPARSEINFER_ALGO", force)
        m = sparseinfer.load(dst, exec=exec_, cache="")
        algos = {l["name"]: (l["algo_batch1"], l["algo_batchn"]) for l in m.layers() if l["dtype"] == "int8"}
        conv = conv if isinstance(conv, tuple) else (conv, conv)
        assert algos == {"conv1": conv, "conv2": conv, "fc1": fc}, algos
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
    # OUT naming IN (here by another spelling of the path) would overwrite the float model: refused
    before = open(src, "rb").read()
    with pytest.raises(QuantizeError, match="the float model being quantized"):
        sparseinfer.quantize(src, os.path.join(MODELS, ".", "lenet5.npz"), calibration=x[:1] * 0, progress=None)
    assert open(src, "rb").read() == before
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


_WI16_CASES = [  # C (24, 33: a vector of 16 and a scalar tail; 3: no vector), F, H, W, padding, zero points, batch
    (24, 20, 7, 9, "same", 7, 3, 3), (64, 64, 14, 14, "same", 0, 0, 1), (3, 19, 11, 10, "valid", 200, None, 2),
    (33, 40, 5, 6, "same", 255, 20, 2), (128, 32, 1, 1, "same", 3, 3, 1), (512, 16, 4, 4, "same", 128, 0, 1),
    # float output of the largest sums: their scaled transform (4x, 36x, 576x) wraps int32
    (512, 8, 5, 4, "same", 0, None, 1),
    # U over any L2's half and two groups of tiles: the shared groups (the others run per thread)
    (256, 256, 52, 52, "same", 9, 5, 1),
    # a max pool after it: 2x2 (in F(2x2)'s and F(4x4)'s output transform) and 3x3, odd sizes
    (24, 20, 11, 13, "same", 7, 3, 2, (2, 2)), (40, 24, 9, 10, "valid", 0, None, 2, (2, 2)),
    (16, 16, 9, 9, "same", 5, 4, 1, (3, 3)),
    # uint8 out at zero point 0 through the fused pool (the packing's saturation is the clamp)
    (24, 20, 11, 13, "same", 7, 0, 1, (2, 2))]
F4_BOUND = (2 ** 25 - 1) // 255  # conv_winograd4_i16: 255 x (a filter's positive or negative weight sum) < 2^25
_F4 = ("conv_winograd4_i16", "conv_winograd4_i16_local")  # the second: per-thread groups of tiles, whatever U's size


def _wi16_weights(rng, F, K, algo, over=False):
    """Weights of the int16 Winograd cases: rows 0 and 1 at +127 and -127 (the largest
    transformed values); for F(4x4), whose sums must stay below 2^25, rows 0 and 1 at the bound
    instead (one step past it with over) and the others small enough."""
    if algo not in _F4:
        w = rng.integers(-127, 128, (F, K))
        w[0], w[1] = 127, -127
        return w.astype(np.int8)
    lim = min(127, F4_BOUND // K)
    w = rng.integers(-lim, lim + 1, (F, K))
    top = min(F4_BOUND + over, 127 * K)  # a row of K weights summing to top
    w[0] = top // K
    w[0, :top % K] += 1
    w[1] = -w[0]
    return w.astype(np.int8)


_WI16_CHILD = ("import sys, json, numpy as np, sparseinfer\n"
               "out = []\n"
               "for i, p in enumerate(sys.argv[2:]):\n"
               "    m = sparseinfer.load(p, cache='')\n"
               "    x = np.load(f'{sys.argv[1]}/x{i}.npy')\n"
               "    np.save(f'{sys.argv[1]}/y{i}.npy', m.trace(x)[0].reshape(len(x), -1))\n"
               "    np.save(f'{sys.argv[1]}/y1_{i}.npy', m.trace(x[:1])[0].reshape(1, -1))\n"
               "    np.save(f'{sys.argv[1]}/p{i}.npy', m.predict(x).reshape(len(x), -1))\n"
               "    l = m.layers()[0]\n"
               "    out.append([l['algo_batch1'], l['algo_batchn'], sorted(l['candidates_batch1'])])\n"
               "print(json.dumps([sparseinfer.int8_isa(), out]))\n")


# the int16 GEMM kernel each run takes: vpmaddwd + vpaddd (plain AVX2), the VEX vpdpwssd
# (AVX-VNNI, under the avx2 cap), the one on zmm (AVX-512 VNNI); the child says which
# by sparseinfer.int8_isa() (the same choice: ops/si_igemm.c's si_vnni_form)
_WI16_KERNELS = {"maddwd": ({"SPARSEINFER_ISA": "avx2", "SPARSEINFER_DISABLE": "vnni"}, "avx2"),
                 "dpwssd_vex": ({"SPARSEINFER_ISA": "avx2"}, "avx_vnni"),
                 "dpwssd_zmm": ({"SPARSEINFER_ISA": "avx512", "SPARSEINFER_DISABLE": "amx"}, "avx512_vnni")}


@pytest.mark.parametrize("kern", sorted(_WI16_KERNELS))
@pytest.mark.parametrize("algo", ["conv_winograd_i16", "conv_winograd3_i16", *_F4])
def test_winograd_i16_exact(tmp_path, algo, kern):
    """The int16 Winograd entries (F(2x2), F(3x3) and F(4x4) of 3x3), with each of their GEMM
    kernels (vpmaddwd + vpaddd under the AVX2 cap with VNNI disabled; vpdpwssd, VEX under the cap
    and on zmm at AVX-512 with AMX disabled; in child processes) give the int8 convolution's exact
    sums: their outputs equal the NumPy int8 reference's bit for bit, over
    channel counts with and without a vector tail, odd output sizes (partial tiles), valid and
    same padding (taps at the input zero point, 0 to 255), uint8 outputs with ReLU (at zero point
    0 reaching 0 and 255, the clamps the packing does there) and float ones without, the largest
    transformed values and sums whose scaled transform wraps int32, batches of 1 to 3,
    per-thread and shared groups of tiles (conv_winograd4_i16_local: per-thread groups in every
    case, U of up to 4.7 MB read for each), a following 2x2 max pool (fused into the output
    transform but for F(3x3)) and a 3x3 one (after it). F(4x4) applies only while every
    filter's sums stay below 2^25: a layer one step past that leaves it out."""
    rng = np.random.default_rng(11)
    paths, wants = [], []
    cases = list(_WI16_CASES) + ([(512, 8, 5, 4, "same", 0, None, 1)] if algo in _F4 else [])
    ends = set()  # the uint8 outputs at zero point 0 reach 0 and 255
    # per-thread groups (U in half an L2) for the small layers, shared ones for the 256 x 256
    for i, (C, F, H, W, pad, zin, zout, batch, *pool) in enumerate(cases):
        over = i == len(_WI16_CASES)  # F(4x4)'s extra case
        Wt = _wi16_weights(rng, F, 9 * C, algo, over=over)
        quant = {"input": (0.02, zin), "weight_scale": np.full(F, 1e-4, np.float32)}
        if zout is not None:
            quant["output"] = (0.003 * np.sqrt(C), zout)
        layers = [{"name": "c", "type": "conv2d", "kernel": [3, 3], "padding": pad, "W": Wt,
                   "activation": "relu" if zout is not None else "linear",
                   "b": rng.integers(-5000, 5000, F).astype(np.int32), "quant": quant}]
        if pool:
            layers.append({"name": "p", "type": "maxpool2d", "pool": list(pool[0]), "strides": list(pool[0])})
        path = tmp_path / f"w{i}.npz"
        write_model(path, layers, {"shape": [H, W, C]})
        read, _ = read_layers_int8(str(path))
        x = rng.uniform(-5, 5, (batch, H, W, C)).astype(np.float32)
        x[..., :] = np.where(rng.random(x.shape) < 0.3, 10.0, x)  # inputs at 255 (the largest sums)
        np.save(tmp_path / f"x{i}.npy", x)
        want = make_cases.reference_forward_int8(read[:1], x.astype(np.float64)).astype(np.float32)
        assert len(np.unique(want)) > 2, "the case's outputs do not vary"
        if zout == 0:  # uint8 at zero point 0: where the kernels leave the clamps to the packing
            q = np.rint(want / quant["output"][0])
            ends |= {0, 255} & set(q.ravel().tolist())
        paths.append(str(path))
        wants.append((want, make_cases.reference_forward_int8(read, x.astype(np.float64)).astype(np.float32)))
    assert ends == {0, 255}, f"the zero-point-0 cases reach only {sorted(ends)} of 0 and 255"
    kenv, want_isa = _WI16_KERNELS[kern]
    env = {k: v for k, v in os.environ.items() if k not in ("SPARSEINFER_ISA", "SPARSEINFER_DISABLE")}
    env.update(kenv, SPARSEINFER_ALGO=algo)
    r = subprocess.run([sys.executable, "-c", _WI16_CHILD, str(tmp_path), *paths], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    isa, got_algos = json.loads(r.stdout)
    if isa != want_isa:  # checked before the results: the kernels ran, but not the ones meant
        pytest.skip(f"this CPU has no {want_isa} under {kenv} (int8 dot product: {isa})")
    for i, (case, want) in enumerate(zip(cases, wants)):
        if i == len(_WI16_CASES):  # one step past F(4x4)'s bound
            assert algo not in got_algos[i][2] and got_algos[i][0] != algo, got_algos[i]
            continue
        assert got_algos[i][:2] == [algo, algo], (case, got_algos[i])
        want, want_out = want
        # trace: the convolution's own output (tracing runs a pool on its own); predict: the
        # model's output, through run_pool where there is a pool
        for name, w in ((f"y{i}", want.reshape(len(want), -1)), (f"y1_{i}", want[:1].reshape(1, -1)),
                        (f"p{i}", want_out.reshape(len(want_out), -1))):
            got = np.load(tmp_path / f"{name}.npy")
            bad = np.argwhere(got != w)
            assert bad.size == 0, (f"case {case} ({name}): {algo} differs from the NumPy int8 reference "
                                   f"at (sample, element) {bad[:3].tolist()}: {got[tuple(bad[0])]} vs {w[tuple(bad[0])]}")


# conv_igemm's fused first-layer path (kernel rows of at most 16 bytes: patches unrolled per
# thread into L1 by 16-byte moves, si_im2col_u8_short): C, F, kernel, H, W, padding, input zero
# point, output zero point (None: float output, no ReLU), batch, stride
_SMALL_ROW_CASES = [
    (3, 64, (3, 3), 13, 11, "same", 121, 0, 3, 1),      # an RGB first layer, taps at the zero point
    (3, 20, (3, 3), 9, 8, "valid", 0, None, 1, 1),
    (1, 20, (5, 5), 12, 12, "valid", 7, 3, 2, 1),       # LeNet-5's conv1
    (4, 33, (3, 4), 10, 9, "same", 255, 9, 2, 1),       # kernel rows of exactly 16 bytes
    (3, 64, (3, 3), 40, 40, "same", 100, 0, 1, 1),      # 1,600 rows: several chunks on each thread
    (3, 16, (3, 3), 11, 12, "same", 30, 5, 2, 2)]       # stride 2
# the int8 GEMM kernel each run takes (sparseinfer.int8_isa(), and the weights: pair-safe ones for
# vpmaddubsw, others for vpmaddwd)
_IGEMM_KERNELS = {"vnni512": ({"SPARSEINFER_ISA": "avx512", "SPARSEINFER_DISABLE": "amx"}, "avx512_vnni", False),
                  "avx_vnni": ({"SPARSEINFER_ISA": "avx2"}, "avx_vnni", False),
                  "maddubs": ({"SPARSEINFER_ISA": "avx2", "SPARSEINFER_DISABLE": "vnni"}, "avx2", True),
                  "maddwd": ({"SPARSEINFER_ISA": "avx2", "SPARSEINFER_DISABLE": "vnni,maddubs"}, "avx2", False),
                  "portable": ({"SPARSEINFER_ISA": "portable"}, "portable", False)}


@pytest.mark.parametrize("kern", sorted(_IGEMM_KERNELS))
def test_conv_igemm_small_rows_exact(tmp_path, kern):
    """conv_igemm on layers whose kernel rows fit 16 bytes (each thread unrolls its rows of
    patches into L1 and multiplies them in the same pass) with each int8 GEMM kernel (child
    processes under ISA caps): outputs equal the NumPy int8 reference's bit for bit, at batch 1
    (trace of one sample) and above, for 'same' padding at input zero points 0 to 255, 'valid',
    a 5 x 5 kernel on one channel, 16-byte kernel rows, stride 2, enough rows for several chunks
    a thread, uint8 outputs with ReLU and float ones without."""
    rng = np.random.default_rng(23)
    kenv, want_isa, pair_safe = _IGEMM_KERNELS[kern]
    paths, wants = [], []
    for i, (C, F, (kh, kw), H, W, pad, zin, zout, batch, stride) in enumerate(_SMALL_ROW_CASES):
        K = kh * kw * C
        lim = 64 if pair_safe else 127
        Wt = rng.integers(-lim, lim + 1, (F, K)).astype(np.int8)
        Wt[0], Wt[1] = lim, -lim
        quant = {"input": (0.02, zin), "weight_scale": np.full(F, 1e-3, np.float32)}
        if zout is not None:
            quant["output"] = (0.002 * K, zout)
        layers = [{"name": "c", "type": "conv2d", "kernel": [kh, kw], "strides": [stride, stride], "padding": pad,
                   "W": Wt, "activation": "relu" if zout is not None else "linear",
                   "b": rng.integers(-3000, 3000, F).astype(np.int32), "quant": quant}]
        path = tmp_path / f"s{i}.npz"
        write_model(path, layers, {"shape": [H, W, C]})
        read, _ = read_layers_int8(str(path))
        x = rng.uniform(-5, 5, (batch, H, W, C)).astype(np.float32)
        np.save(tmp_path / f"x{i}.npy", x)
        want = make_cases.reference_forward_int8(read, x.astype(np.float64)).astype(np.float32)
        assert len(np.unique(want)) > 2, "the case's outputs do not vary"
        paths.append(str(path))
        wants.append(want.reshape(len(want), -1))
    env = {k: v for k, v in os.environ.items() if k not in ("SPARSEINFER_ISA", "SPARSEINFER_DISABLE")}
    env.update(kenv, SPARSEINFER_ALGO="conv_igemm")
    r = subprocess.run([sys.executable, "-c", _WI16_CHILD, str(tmp_path), *paths], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    isa, got_algos = json.loads(r.stdout)
    if isa != want_isa:
        pytest.skip(f"this CPU has no {want_isa} under {kenv} (int8 dot product: {isa})")
    for i, (case, want) in enumerate(zip(_SMALL_ROW_CASES, wants)):
        assert got_algos[i][:2] == ["conv_igemm", "conv_igemm"], (case, got_algos[i])
        for name, w in ((f"y{i}", want), (f"y1_{i}", want[:1]), (f"p{i}", want)):
            got = np.load(tmp_path / f"{name}.npy")
            bad = np.argwhere(got != w)
            assert bad.size == 0, (f"case {case} ({name}, {kern}): conv_igemm differs from the NumPy int8 reference "
                                   f"at (sample, element) {bad[:3].tolist()}: {got[tuple(bad[0])]} vs {w[tuple(bad[0])]}")


# ---- reduce_range: weights in [-64, 64], vpmaddubsw on AVX2 without VNNI ------------------------

NO_VNNI = {"SPARSEINFER_ISA": "avx2", "SPARSEINFER_DISABLE": "vnni"}


def _mnist_calibration(mnist, path: str, count: int = 200) -> np.ndarray:
    from sparseinfer.preprocess import normalize
    x_train = mnist[0]
    idx = np.sort(np.random.default_rng(1).choice(len(x_train), count, replace=False))
    return normalize(x_train[idx][..., None], read_manifest(path)["input"])


@pytest.fixture(scope="module", params=["on", "pairs"])
def reduced(request, mnist, tmp_path_factory):
    """lenet5_pruned quantized with reduce_range on, or pairs (200 MNIST images): (fp32 path,
    int8 path, report)."""
    src = os.path.join(MODELS, "lenet5_pruned.npz")
    dst = str(tmp_path_factory.mktemp("rr") / f"lenet5_pruned_{request.param}.npz")
    rep = sparseinfer.quantize(src, dst, calibration=_mnist_calibration(mnist, src), reduce_range=request.param,
                               progress=None)
    return src, dst, rep


def test_reduce_range_roundtrip(reduced, mnist, tmp_path):
    """reduce_range on: every int8 weight in [-64, 64], each channel's largest at +-64 and its
    scale max|w| / 64, the manifest saying "weight_range": 64, the dequantized weights within
    half a step of the float ones; pairs: "weight_pair_max": 128, no pair of one sign past
    128, scales between max|w| / 127 and the pair-safe one, the weights' squared error no worse
    than on's; off: [-127, 127], no key."""
    from sparseinfer.format import pair_max
    from sparseinfer.quantization import read_layers
    src, dst, rep = reduced
    mode = rep["reduce_range"]
    assert mode in ("on", "pairs") and rep["weight_range"] == (64 if mode == "on" else 127)
    _, f32 = read_layers(src)
    w32 = {l["name"]: l["W"] for l in f32 if "W" in l}
    layers, _ = read_layers_int8(dst)
    man = read_manifest(dst)
    for L, e in zip(layers, man["layers"]):
        if not L.get("quant"):
            continue
        W, ws, Wf = L["W"].astype(np.int16), L["quant"]["weight_scale"], w32[e["name"]]
        amax = np.abs(Wf).max(1)
        err = np.abs(W * ws[:, None] - Wf)
        if mode == "on":
            assert e["quant"]["weight_range"] == 64 and "weight_pair_max" not in e["quant"], e["name"]
            assert np.abs(W).max() == 64 and np.all(np.abs(W).max(1)[amax > 0] == 64), e["name"]
            np.testing.assert_allclose(ws, amax / 64, rtol=1e-6, err_msg=e["name"])
            assert np.all(err <= ws[:, None] * 0.5 * (1 + 1e-5)), e["name"]
        else:
            assert e["quant"]["weight_pair_max"] == 128 and "weight_range" not in e["quant"], e["name"]
            assert pair_max(L["W"]) <= 128 and np.abs(W).max() <= 127, e["name"]
            live = amax > 0
            assert np.all(ws[live] >= amax[live] / 127 * (1 - 1e-6)) and np.all(ws[live] <= amax[live] / 64 * 1.01)
            q64 = np.clip(np.rint(Wf / (amax / 64 + (amax == 0))[:, None]), -64, 64) * (amax / 64)[:, None]
            assert (err ** 2).sum() <= ((q64 - Wf) ** 2).sum(), e["name"]
    off = tmp_path / "off.npz"
    rep = sparseinfer.quantize(src, off, calibration=_mnist_calibration(mnist, src, 16), reduce_range="off",
                               progress=None)
    assert rep["weight_range"] == 127 and rep["reduce_range"] == "off"
    for L, e in zip(*(read_layers_int8(off)[0], read_manifest(off)["layers"])):
        if L.get("quant"):
            assert "weight_range" not in e["quant"] and np.abs(L["W"].astype(np.int16)).max() == 127
    with pytest.raises(QuantizeError, match="reduce_range"):
        sparseinfer.quantize(src, tmp_path / "x.npz", calibration=np.zeros((1, 28, 28, 1), np.float32),
                             reduce_range="sometimes", progress=None)


def test_pairs_leaves_the_int16_winograd_layers_alone(tmp_path):
    """reduce_range "pairs" constrains only the layers the int8 GEMM (vpmaddubsw) would run:
    a 3x3 stride-1 convolution of 16 or more input channels, which the exact int16 Winograd
    runs with any int8 weights, keeps [-127, 127] unconstrained (no claim in the file); a 3x3
    one of 3 channels, a 5x5 one and the dense layer are pair-safe. The report says which."""
    from sparseinfer.format import pair_max
    rng = np.random.default_rng(12)
    layers = [
        {"name": "rgb", "type": "conv2d", "kernel": [3, 3], "padding": "same", "activation": "relu",
         "W": rng.standard_normal((16, 27)).astype(np.float32), "b": np.zeros(16, np.float32)},
        {"name": "wino", "type": "conv2d", "kernel": [3, 3], "padding": "same", "activation": "relu",
         "W": rng.standard_normal((16, 144)).astype(np.float32), "b": np.zeros(16, np.float32)},
        {"name": "five", "type": "conv2d", "kernel": [5, 5], "padding": "valid", "activation": "relu",
         "W": rng.standard_normal((8, 400)).astype(np.float32), "b": np.zeros(8, np.float32)},
        {"name": "f", "type": "flatten"},
        {"name": "fc", "type": "dense", "activation": "relu", "W": rng.standard_normal((10, 288)).astype(np.float32),
         "b": np.zeros(10, np.float32)},
        {"name": "out", "type": "dense", "activation": "linear", "W": rng.standard_normal((4, 10)).astype(np.float32),
         "b": np.zeros(4, np.float32)},
    ]
    src, dst = tmp_path / "f.npz", tmp_path / "q.npz"
    write_model(src, layers, {"shape": [10, 10, 3]})
    x = rng.uniform(0, 1, (16, 10, 10, 3)).astype(np.float32)
    rep = sparseinfer.quantize(src, dst, calibration=x, reduce_range="pairs", progress=None)
    safe = {l["name"]: l["pair_safe"] for l in rep["layers"] if l["dtype"] == "int8"}
    assert safe == {"rgb": True, "wino": False, "five": True, "fc": True}, safe
    read, _ = read_layers_int8(str(dst))
    for L, e in zip(read, read_manifest(dst)["layers"]):
        if not L.get("quant"):
            continue
        assert ("weight_pair_max" in e["quant"]) == safe[e["name"]], e
        if safe[e["name"]]:
            assert pair_max(L["W"]) <= 128, e["name"]
        else:  # the full range, pairs past 128 included (random normal weights have them)
            assert np.abs(L["W"].astype(np.int16)).max() == 127 and pair_max(L["W"]) > 128, e["name"]
    want = make_cases.reference_forward(read, x[:3])
    np.testing.assert_allclose(sparseinfer.load(dst).predict(x[:3]), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_reduce_range_auto_follows_the_runtime():
    """auto makes the weights pair-safe exactly where the runtime's int8 dot product is AVX2
    without VNNI, as the
    ISA cap and SPARSEINFER_DISABLE leave it (child processes: the cap is read at start-up)."""
    child = ("import json, sparseinfer\n"
             "from sparseinfer.quantization import choose_reduce_range\n"
             "print(json.dumps([sparseinfer.int8_isa(), *choose_reduce_range('auto')]))\n")
    seen = {}
    # "avx512vnni_only_capped": a CPU with AVX-512 VNNI but not AVX-VNNI (Zen 4, Ice Lake)
    # capped to avx2 has no VNNI: the VEX vpdpbusd would be an illegal instruction there
    for name, env in (("default", {}), ("avx2", {"SPARSEINFER_ISA": "avx2"}), ("novnni", NO_VNNI),
                      ("portable", {"SPARSEINFER_ISA": "portable"}),
                      ("avx512vnni_only_capped", {"SPARSEINFER_ISA": "avx2", "SPARSEINFER_DISABLE": "avxvnni"})):
        e = {k: v for k, v in os.environ.items() if k not in ("SPARSEINFER_ISA", "SPARSEINFER_DISABLE")}
        r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env={**e, **env}, timeout=120)
        assert r.returncode == 0, r.stderr
        isa, mode, why = json.loads(r.stdout)
        assert mode == ("pairs" if isa == "avx2" else "off") and isa in why, (name, isa, mode, why)
        seen[name] = isa
    assert seen["portable"] == "portable"
    if sparseinfer.isa() != "portable":  # an x86 CPU with AVX2
        assert seen["novnni"] == "avx2"
        assert seen["avx512vnni_only_capped"] == "avx2", seen


def test_reduced_range_bit_exact_without_vnni(reduced, mnist, tmp_path):
    """The vpmaddubsw kernel, forced (AVX2 cap, VNNI disabled; the reduced weights are pair-safe,
    so the int8 GEMM packs them for it), against the NumPy integer reference bit for bit, at
    batch 1 and 5; and the vpmaddwd kernel (maddubs disabled too) on the same file, which must
    give the same bits. The file is the same on every CPU: its outputs under the default ISA
    match as well."""
    from sparseinfer.preprocess import normalize
    _, dst, _ = reduced
    layers, _ = read_layers_int8(dst)
    for L in layers:  # pair-safe: the condition ops/si_igemm.c checks when packing
        if L.get("quant"):
            W = L["W"].astype(np.int32)
            W = np.pad(W, ((0, 0), (0, W.shape[1] % 2)))
            pos, neg = np.maximum(W, 0), np.maximum(-W, 0)
            assert (pos[:, 0::2] + pos[:, 1::2]).max() <= 128 and (neg[:, 0::2] + neg[:, 1::2]).max() <= 128
    x = normalize(mnist[2][:5][..., None], read_manifest(dst)["input"])
    np.save(tmp_path / "x.npy", x)
    int8_idx = [i for i, L in enumerate(layers) if L.get("quant")]
    want = {i: make_cases.reference_forward_int8(layers[:i + 1], x.astype(np.float64)).astype(np.float32)
            for i in int8_idx}
    child = ("import sys, json, numpy as np, sparseinfer\n"
             "x = np.load(sys.argv[2])\n"
             "m = sparseinfer.load(sys.argv[1], exec='dense', cache='')\n"
             "one = [np.concatenate(t) for t in zip(*(m.trace(x[i:i + 1]) for i in range(len(x))))]\n"
             "five = m.trace(x)\n"
             "np.savez(sys.argv[3], *[o.reshape(len(x), -1) for o in one + five])\n"
             "print(json.dumps([sparseinfer.int8_isa(), [(l['algo_batch1'], l['algo_batchn']) for l in m.layers()"
             " if l['dtype'] == 'int8'], [l['why'] for l in m.layers() if l['dtype'] == 'int8']]))\n")
    e = {k: v for k, v in os.environ.items() if k not in ("SPARSEINFER_ISA", "SPARSEINFER_DISABLE")}
    e["SPARSEINFER_ALGO"] = "conv_igemm,fc_igemm"
    n = len(layers)
    for what, env in (("vpmaddubsw", NO_VNNI), ("vpmaddwd", {**NO_VNNI, "SPARSEINFER_DISABLE": "vnni,maddubs"}),
                      ("default ISA", {})):
        out = tmp_path / f"{what.replace(' ', '_')}.npz"
        r = subprocess.run([sys.executable, "-c", child, dst, str(tmp_path / "x.npy"), str(out)], capture_output=True,
                           text=True, env={**e, **env}, timeout=300)
        assert r.returncode == 0, r.stderr
        isa, algos, whys = json.loads(r.stdout)
        if env and sparseinfer.isa() != "portable":  # a CPU with AVX2: the cap leaves AVX2 without VNNI
            assert isa == "avx2", (what, isa)
        # pair-safe layers are not reported as taking vpmaddwd (test_vpmaddwd_fallback_is_said)
        assert not any("vpmaddwd" in w for w in whys), (what, whys)
        assert all(a == ["conv_igemm", "conv_igemm"] or a == ["fc_igemm", "fc_igemm"] for a in algos), (what, algos)
        with np.load(out) as z:
            got = [z[f"arr_{j}"] for j in range(2 * n)]
        for batch, off in (("batch 1", 0), ("batch 5", n)):
            for i in int8_idx:
                bad = np.argwhere(got[off + i] != want[i])
                assert bad.size == 0, (f"{what} {batch}: layer {layers[i]['name']} differs from the NumPy int8 "
                                       f"reference at (sample, element) {bad[:3].tolist()}")


def test_weight_range_claims_are_checked(tmp_path):
    """"weight_range" is a claim about the weights: the writer refuses a false one, the loader
    refuses a file whose manifest makes it falsely (edited after writing), and a true one
    loads."""
    import io
    import zipfile
    W = np.array([[64, -64, 3], [1, 2, -5]], np.int8)
    layer = {"name": "d", "type": "dense", "W": W, "b": np.zeros(2, np.int32),
             "quant": {"input": (0.1, 0), "output": None, "weight_scale": np.ones(2, np.float32),
                       "weight_range": 64}}
    spec = {"shape": [1, 1, 3]}
    ok = tmp_path / "ok.npz"
    write_model(ok, [{"name": "f", "type": "flatten"}, layer], spec)
    assert read_manifest(ok)["layers"][1]["quant"]["weight_range"] == 64
    m = sparseinfer.load(ok)
    np.testing.assert_allclose(m.predict(np.ones((1, 1, 1, 3), np.float32) * 0.1).ravel(), [0.3, -0.2], atol=1e-6)
    pairs = {**layer, "W": np.array([[127, -127, 100], [1, 127, -128 + 1]], np.int8),
             "quant": {**{k: v for k, v in layer["quant"].items() if k != "weight_range"}, "weight_pair_max": 128}}
    write_model(ok, [{"name": "f", "type": "flatten"}, pairs], spec)  # (127, -127), (100, 0): pair-safe
    assert read_manifest(ok)["layers"][1]["quant"]["weight_pair_max"] == 128
    sparseinfer.load(ok)
    for bad, msg in ((dict(W=np.array([[65, 0, 0], [0, 0, 0]], np.int8)), "past its weight_range 64"),
                     (dict(quant={**layer["quant"], "weight_range": 0}), "weight_range must be an integer"),
                     (dict(quant={**layer["quant"], "weight_range": 64.5}), "weight_range must be an integer"),
                     (dict(pairs, W=np.array([[127, 2, 0], [0, 0, 0]], np.int8)), "sums to 129 in magnitude"),
                     (dict(pairs, quant={**pairs["quant"], "weight_pair_max": 255}), "weight_pair_max must be")):
        with pytest.raises(ModelFormatError, match=msg):
            write_model(tmp_path / "x.npz", [{"name": "f", "type": "flatten"}, {**layer, **bad}], spec)
    # files lying about it: written honestly, the manifest then edited to make the claim
    for storage in ("dense", "csr"):
        for key, W, msg in (("weight_range", [[127, 127, 0], [0, 0, 0]], "magnitude 127, past the file's "
                             "quant.weight_range 64"),
                            ("weight_pair_max", [[0, 0, 1], [-100, -29, 0]], "channel 1 has a pair of weights of one "
                             "sign summing to 129 in magnitude, past the file's quant.weight_pair_max 128")):
            honest = tmp_path / "honest.npz"
            write_model(honest, [{"name": "f", "type": "flatten"},
                                 {**layer, "W": np.array(W, np.int8), "storage": storage,
                                  "quant": {k: v for k, v in layer["quant"].items() if k != "weight_range"}}], spec)
            with zipfile.ZipFile(honest) as z:
                members = {name: z.read(name) for name in z.namelist()}
            man = read_manifest(honest)
            assert man["layers"][1]["weight"]["format"] == storage
            man["layers"][1]["quant"][key] = 64 if key == "weight_range" else 128
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.frombuffer(json.dumps(man).encode(), np.uint8), allow_pickle=False)
            members["model.json.npy"] = buf.getvalue()
            liar = tmp_path / "liar.npz"
            with zipfile.ZipFile(liar, "w") as z:
                for name, d in members.items():
                    z.writestr(name, d)
            with pytest.raises(sparseinfer.SparseInferError, match=msg):
                sparseinfer.load(liar)


def test_vpmaddwd_fallback_is_said(quantized, tmp_path):
    """On AVX2 without VNNI an int8 layer whose weights are not pair-safe (a file quantized
    without reduce_range) runs the slower vpmaddwd kernel, and `info`'s reason says so."""
    if sparseinfer.isa() == "portable":
        pytest.skip("no AVX2 on this CPU")
    _, dst, _ = quantized["lenet5"]
    child = ("import sys, json, sparseinfer\n"
             "m = sparseinfer.load(sys.argv[1], cache='')\n"
             "print(json.dumps([sparseinfer.int8_isa(), [l['why'] for l in m.layers() if l['dtype'] == 'int8']]))\n")
    e = {k: v for k, v in os.environ.items() if k not in ("SPARSEINFER_ISA", "SPARSEINFER_DISABLE", "SPARSEINFER_ALGO")}
    r = subprocess.run([sys.executable, "-c", child, dst], capture_output=True, text=True, env={**e, **NO_VNNI},
                       timeout=300)
    assert r.returncode == 0, r.stderr
    isa, whys = json.loads(r.stdout)
    assert isa == "avx2" and any("vpmaddwd: weights not pair-safe" in w for w in whys), whys


def _i8_conv(rng, name, F, kh, C, density, q_in, q_out, **kw):
    W = rng.integers(-127, 128, (F, kh * kh * C)).astype(np.int8)
    W[rng.random(W.shape) >= density] = 0
    return {"name": name, "type": "conv2d", "kernel": [kh, kh], "W": W,
            "b": rng.integers(-300, 300, F).astype(np.int32),
            "quant": {"input": q_in, "output": q_out, "weight_scale": np.full(F, 0.004, np.float32)}, **kw}


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("fc1", ["fc_csrmm_i8", "fc_csrmm_f32_i8", "fc_csrmm"])
def test_sparse_batch_i8_blocked_chain(tmp_path, isa, fc1, monkeypatch):
    """conv_sparse_batch_i8 hands uint8 activations over in blocks of 16 or 64 samples: c1 ->
    c2 in blocks through a requantization (c2 reads another scale and zero point), c2 -> 3x3
    pool -> c3, c3 -> fc1 in blocks, directly (int8 fc1: fc_csrmm_i8, fc_csrmm_f32_i8) or
    through a dequantization (float fc1: fc_csrmm); short last blocks included. The logits are the NumPy int8 reference's to float rounding (the float fc
    layers'); an int8 output one step off would move them by far more."""
    order = ["portable", "avx2", "avx512"]
    if order.index(isa) > order.index(sparseinfer.isa()):
        pytest.skip(f"this CPU has {sparseinfer.isa()} at most")
    rng = np.random.default_rng(11)
    layers = [
        _i8_conv(rng, "c1", 20, 5, 1, 0.7, (0.02, 7), (0.035, 3), padding="valid", activation="linear"),
        {"name": "p1", "type": "maxpool2d", "pool": [2, 2], "padding": "valid"},
        _i8_conv(rng, "c2", 18, 3, 20, 0.15, (0.045, 4), (0.04, 0), padding="same", activation="relu"),
        {"name": "p2", "type": "maxpool2d", "pool": [3, 3], "padding": "valid"},
        _i8_conv(rng, "c3", 24, 2, 18, 0.3, (0.04, 0), (0.03, 5), padding="valid", activation="relu",
                 strides=[2, 2]),
        {"name": "f", "type": "flatten"},
        {"name": "fc1", "type": "dense", "activation": "relu",
         "W": (rng.standard_normal((40, 96)) * (rng.random((40, 96)) < 0.5)).astype(np.float32),
         "b": rng.standard_normal(40).astype(np.float32) * 0.1}
        if fc1 == "fc_csrmm" else
        {"name": "fc1", "type": "dense", "activation": "relu",
         "W": (rng.integers(-127, 128, (40, 96)) * (rng.random((40, 96)) < 0.5)).astype(np.int8),
         "b": rng.integers(-300, 300, 40).astype(np.int32),
         "quant": {"input": (0.03, 5), "output": (0.1, 0), "weight_scale": np.full(40, 0.004, np.float32)}},
        {"name": "fc2", "type": "dense", "activation": "linear", "W": rng.standard_normal((10, 40)).astype(np.float32),
         "b": np.zeros(10, np.float32)},
    ]
    path = tmp_path / "chain8.npz"
    write_model(path, layers, {"shape": [28, 28, 1]}, name="chain8")
    read, _ = read_layers_int8(str(path))
    x70 = np.random.default_rng(70).uniform(-0.2, 4, (70, 28, 28, 1))
    for k in (1, 3):  # c1 (zero point 3, linear) and c2 (zero point 0, ReLU) reach both clamps
        s, z = layers[k - 1]["quant"]["output"]
        u = np.rint(make_cases.reference_forward_int8(read[:k], x70) / s + z)
        assert u.min() == 0 and u.max() == 255, (layers[k - 1]["name"], u.min(), u.max())
    monkeypatch.setenv("SPARSEINFER_ALGO", f"conv_sparse_batch_i8,{fc1}")
    try:
        sparseinfer.set_isa(isa)
        m = sparseinfer.load(str(path), exec="sparse", plan="nomeasure", cache="")
        picks = {l["name"]: l["algo_batchn"] for l in m.layers() if l["algo_batchn"]}
        assert picks == {"c1": "conv_sparse_batch_i8", "c2": "conv_sparse_batch_i8", "c3": "conv_sparse_batch_i8",
                         "fc1": fc1, "fc2": picks["fc2"]}, picks
        for batch in (2, 17, 64, 70):
            x = np.random.default_rng(batch).uniform(-0.2, 4, (batch, 28, 28, 1)).astype(np.float32)
            want = make_cases.reference_forward_int8(read, x.astype(np.float64))
            # logits of size ~10-100; one uint8 step of c3 (0.03) moves them by ~0.03 x |fc weights|
            np.testing.assert_allclose(m.predict(x), want, rtol=1e-5, atol=1e-4,
                                       err_msg=f"isa {isa}, batch {batch}: blocked int8 chain")
    finally:
        sparseinfer.set_isa("auto")


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("big", [False, True])
def test_sparse_batch_i8_only_where_float_is_exact(tmp_path, big, isa):
    """conv_sparse_batch_i8 sums int8 weights times (x - zero point) in float32, exact while
    every row's 255 * sum |w| < 2^24: a row just below applies (and matches the NumPy int8
    reference bit for bit at batch 20, with the zero point 7 padding the border), a row just
    above (599 weights of 127 and one of 81: 255 * 76154 > 2^24) leaves the entry out."""
    order = ["portable", "avx2", "avx512"]
    if order.index(isa) > order.index(sparseinfer.isa()):
        pytest.skip(f"this CPU has {sparseinfer.isa()} at most")
    sparseinfer.set_isa(isa)  # every requantization variant (portable, AVX2) against the reference
    try:
        _sparse_batch_i8_case(tmp_path, big)
    finally:
        sparseinfer.set_isa("auto")


def _sparse_batch_i8_case(tmp_path, big):
    rng = np.random.default_rng(3)
    C = 24
    W = rng.integers(-127, 128, (4, 5 * 5 * C)).astype(np.int8)
    W[rng.random(W.shape) < 0.5] = 0
    if big:
        W[0, :] = 127
        W[0, 1] = 81
    else:
        W[0, :] = 0
        W[0, :515] = 127  # 255 * 65405 = 16,678,275 < 16,777,216
    layers = [{"name": "c", "type": "conv2d", "kernel": [5, 5], "padding": "same", "activation": "relu", "W": W,
               "b": rng.integers(-500, 500, 4).astype(np.int32),
               "quant": {"input": (0.02, 7), "output": (0.05, 3), "weight_scale": np.full(4, 0.01, np.float32)}}]
    path = tmp_path / "q.npz"
    write_model(path, layers, {"shape": [6, 6, C]})
    m = sparseinfer.load(path, exec="sparse", cache="")
    cands = m.layers()[0]["candidates_batchn"]
    assert ("conv_sparse_batch_i8" in cands) == (not big), cands
    if big:
        return
    x = rng.uniform(-0.1, 5, (20, 6, 6, C)).astype(np.float32)
    read, _ = read_layers_int8(str(path))
    want = make_cases.reference_forward_int8(read, x.astype(np.float64)).astype(np.float32)
    os.environ["SPARSEINFER_ALGO"] = "conv_sparse_batch_i8"
    try:
        m = sparseinfer.load(path, exec="sparse", cache="")
    finally:
        del os.environ["SPARSEINFER_ALGO"]
    assert m.layers()[0]["algo_batchn"] == "conv_sparse_batch_i8"
    got = m.trace(x)[0].reshape(want.shape)
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"conv_sparse_batch_i8 differs from the NumPy int8 reference at {bad[:3].tolist()}"


def test_int8_max_batch_one(quantized, mnist):
    """An int8 model loaded with max_batch=1 runs a batch of 9 a sample at a time: its int8
    layers' outputs are the NumPy integer reference's, bit for bit (uint8 buffers sized for
    one sample, the quantization of each sample's input), and the probabilities agree."""
    from sparseinfer.preprocess import normalize
    _, dst, _ = quantized["lenet5_pruned"]
    layers, _ = read_layers_int8(dst)
    x = normalize(mnist[2][:9][..., None], read_manifest(dst)["input"])
    m = sparseinfer.load(dst, max_batch=1, cache="")
    assert all(l["plan_batch"][1] == 0 for l in m.layers() if l["weight_shape"])
    traces = m.trace(x)
    for i, L in enumerate(layers):
        if L.get("quant") and L["quant"].get("output"):
            want = make_cases.reference_forward_int8(layers[:i + 1], x.astype(np.float64)).astype(np.float32)
            bad = np.argwhere(traces[i].reshape(len(x), -1) != want)
            assert bad.size == 0, f"{L['name']}: differs from the NumPy int8 reference at {bad[:3].tolist()}"
    np.testing.assert_allclose(m.predict(x), make_cases.reference_forward_int8(layers, x.astype(np.float64)),
                               rtol=1e-5, atol=1e-7)
