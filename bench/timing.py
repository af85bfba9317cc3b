#!/usr/bin/env python
"""First timing of the sparseinfer runtime against TensorFlow on the same weights.

    python bench/timing.py [--repeats N] [--vgg-repeats N] [--json PATH] [--quick] [--no-layers]

Cases: LeNet-5 (models/lenet5.npz) at batch 1 and 64, VGG19 at batch 1 with generated
weights (prune.models.vgg19(), He-scaled normal weights from a fixed seed, exported with
sparseinfer.export_keras to a temporary file). TensorFlow always runs the Keras model
rebuilt from the model file (prune.keras_io.keras_from_model_file), so both sides use the
file's weights bit for bit.

Per case, after warm-up, the two sides are timed interleaved in the same loop (the order
alternates every repeat) and median / IQR of wall time are reported for:
  runtime  sparseinfer.Model.predict(x)                      (numpy in, numpy out)
  tf.fn    @tf.function model(x, training=False), .numpy()   (numpy in, numpy out)
plus one keras model.predict(x) call for reference (it has a large per-call overhead).
Outputs are compared: max |runtime - tf| and that divided by max |tf| (must be <= 1e-4).

Per layer (unless --no-layers/--quick): every conv2d / dense / maxpool2d / softmax layer is
exported as a one-layer model file (a dense layer behind a flatten of a (1, 1, n) input)
and timed alone the same way, fed the real activations of the layer before it. These
times include each call's fixed overhead (input check and copy, output allocation), which
dominates small layers, so they do not add up exactly to the whole-model time.

Threads: TensorFlow intra-op 2, inter-op 1; the runtime uses its default (MKL's).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TF_INTRA, TF_INTER = 2, 1
REL_TOL = 1e-4


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- machine info -------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mkl_info() -> dict:
    import ctypes
    info: dict = {}
    try:
        import importlib.metadata as md
        info["mkl_package"] = md.version("mkl")
    except Exception:  # noqa: BLE001 - informational only
        pass
    for cand in (os.path.join(sys.prefix, "lib", "libmkl_rt.so.3"), "libmkl_rt.so.3", "libmkl_rt.so.2"):
        try:
            lib = ctypes.CDLL(cand)
        except OSError:
            continue
        buf = ctypes.create_string_buffer(512)
        lib.MKL_Get_Version_String(buf, len(buf))
        info["mkl_version_string"] = buf.value.decode(errors="replace")
        info["mkl_max_threads"] = int(lib.MKL_Get_Max_Threads())
        break
    return info


def machine_info(tf) -> dict:
    import importlib.metadata as md
    import keras
    import sparseinfer
    from sparseinfer import _core

    def ver(name: str) -> str | None:
        try:
            return md.version(name)
        except Exception:  # noqa: BLE001
            return None

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "tensorflow_dist": "tensorflow-cpu" if ver("tensorflow-cpu") else "tensorflow",
        "keras": keras.__version__,
        "sparseinfer": sparseinfer.__version__,
        "sparseinfer_c": _core.version(),
        **mkl_info(),
        "tf_intra_op_threads": TF_INTRA,
        "tf_inter_op_threads": TF_INTER,
        "runtime_threads": "default (MKL)",
        "loadavg_start": list(os.getloadavg()),
    }


class OtherLoad:
    """CPU time used by other processes (in cores) while a block runs: system-wide busy time
    from /proc/stat minus this process's own CPU time, over wall time."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), self._busy(), self._own()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        b, o = self._busy(), self._own()
        self.cores = None if b is None or self.busy is None else max(0.0, ((b - self.busy) - (o - self.own)) / wall)
        return False

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system


# ---- timing -------------------------------------------------------------------------------

def stats(ts: list[float]) -> dict:
    a = np.asarray(ts) * 1e3
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_ms": float(med), "iqr_ms": float(q3 - q1), "q1_ms": float(q1), "q3_ms": float(q3),
            "min_ms": float(a.min()), "max_ms": float(a.max()), "n": int(a.size)}


def interleaved(fns: dict, repeats: int, warmup: int) -> dict:
    """Time each callable ``repeats`` times, alternating their order every repeat."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return {n: stats(t) for n, t in times.items()}


def compare(y: np.ndarray, ref: np.ndarray) -> dict:
    y = np.asarray(y, np.float64)
    ref = np.asarray(ref, np.float64)
    if y.shape != ref.shape:
        return {"ok": False, "error": f"shapes differ: {y.shape} vs {ref.shape}"}
    d = np.abs(y - ref)
    scale = float(np.abs(ref).max()) or 1.0
    big = np.abs(ref) > 1e-3 * scale  # elementwise relative error where it is meaningful
    out = {
        "max_abs_diff": float(d.max()),
        "max_rel_diff": float(d.max() / scale),  # relative to the output's scale
        "max_elem_rel_diff": float((d[big] / np.abs(ref[big])).max()) if big.any() else 0.0,
        "argmax_agree": float(np.mean(y.reshape(len(y), -1).argmax(1) == ref.reshape(len(ref), -1).argmax(1))),
        "finite": bool(np.isfinite(y).all() and np.isfinite(ref).all()),
    }
    out["ok"] = bool(out["finite"] and out["max_rel_diff"] <= REL_TOL)
    return out


class TFRunner:
    """model(x, training=False) compiled with tf.function; numpy in, numpy out."""

    def __init__(self, tf, model, shape):
        self.model = model
        spec = tf.TensorSpec((None,) + tuple(int(s) for s in shape), tf.float32)
        self.fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, x):
        return self.fn(x).numpy()


# ---- models -------------------------------------------------------------------------------

def make_vgg19(path: Path, seed: int = 0) -> None:
    """VGG19 with He-scaled normal weights (last layer LeCun-scaled, small normal biases),
    so activations keep unit scale through 19 layers and the softmax is not saturated."""
    import keras
    import sparseinfer
    from prune.models import vgg19

    keras.utils.set_random_seed(seed)
    model = vgg19()
    rng = np.random.default_rng(seed)
    weighted = [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
    for i, layer in enumerate(weighted):
        k_shape = tuple(layer.kernel.shape)
        fan_in = int(np.prod(k_shape[:-1]))
        gain = 1.0 if i == len(weighted) - 1 else 2.0
        k = rng.standard_normal(k_shape, dtype=np.float32) * np.float32(np.sqrt(gain / fan_in))
        b = rng.standard_normal((k_shape[-1],), dtype=np.float32) * np.float32(0.01)
        layer.set_weights([k, b])
    sparseinfer.export_keras(model, path, storage="dense")
    del model
    keras.backend.clear_session()


def single_layer_files(kmodel, tmpdir: Path, tag: str) -> list[tuple[str, str, Path, object]]:
    """One-layer model files (and Keras models) for each weighted / pooling / softmax layer."""
    import keras
    import sparseinfer

    L = keras.layers
    out = []
    for layer in kmodel.layers:
        if not isinstance(layer, (L.Conv2D, L.Dense, L.MaxPooling2D, L.Softmax)):
            continue
        in_shape = tuple(int(s) for s in layer.input.shape[1:])
        clone = layer.__class__.from_config(layer.get_config())
        if len(in_shape) == 1:
            inp = keras.Input((1, 1, in_shape[0]))
            x = L.Flatten(name="flatten_in")(inp)
        else:
            inp = keras.Input(in_shape)
            x = inp
        m = keras.Model(inp, clone(x), name=f"{tag}_{layer.name}")
        if layer.get_weights():
            clone.set_weights(layer.get_weights())
        path = tmpdir / f"{tag}_{layer.name}.npz"
        shape3 = tuple(int(s) for s in inp.shape[1:])
        sparseinfer.export_keras(m, path, input_spec={"shape": list(shape3), "color": "rgb" if shape3[2] == 3 else "gray",
                                                      "mean": 0.0, "std": 1.0},
                                 storage="dense")
        out.append((layer.name, type(layer).__name__, path, m))
    return out


# ---- cases --------------------------------------------------------------------------------

def run_case(tf, name: str, path: Path, batch: int, repeats: int, warmup: int, x: np.ndarray,
             per_layer: bool, tmpdir: Path, layer_repeats: int) -> dict:
    import sparseinfer
    from prune.keras_io import keras_from_model_file

    log(f"[{name} batch {batch}] loading runtime model and Keras model from {path.name}")
    rt = sparseinfer.load(path)
    km = keras_from_model_file(path)
    shape = rt.input_shape
    tfr = TFRunner(tf, km, shape)

    y_rt = rt.predict(x)
    y_tf = tfr(x)
    cmp = compare(y_rt, y_tf)
    log(f"[{name} batch {batch}] outputs: max abs diff {cmp.get('max_abs_diff', float('nan')):.3g}, "
        f"rel {cmp.get('max_rel_diff', float('nan')):.3g} -> {'OK' if cmp['ok'] else 'MISMATCH'}")

    log(f"[{name} batch {batch}] timing runtime vs tf.function: {warmup} warm-up, {repeats} repeats")
    t0 = time.perf_counter()
    with OtherLoad() as other:
        res = interleaved({"runtime": lambda: rt.predict(x), "tf_function": lambda: tfr(x)}, repeats, warmup)
    log(f"[{name} batch {batch}]   done in {time.perf_counter() - t0:.1f} s; other processes used "
        f"{other.cores if other.cores is not None else float('nan'):.2f} cores meanwhile")

    # keras model.predict once for reference (after one untimed call that builds its function)
    km.predict(x, batch_size=batch, verbose=0)
    t0 = time.perf_counter()
    km.predict(x, batch_size=batch, verbose=0)
    res["keras_predict"] = {"single_call_ms": (time.perf_counter() - t0) * 1e3}

    case = {
        "model": name, "batch": batch, "file": path.name if path.parent != tmpdir else f"(generated) {path.name}",
        "file_bytes": path.stat().st_size, "repeats": repeats, "warmup": warmup,
        "runtime": res["runtime"], "tf_function": res["tf_function"], "keras_predict": res["keras_predict"],
        "ratio_tf_over_runtime": res["tf_function"]["median_ms"] / res["runtime"]["median_ms"],
        "outputs": cmp, "loadavg_after": list(os.getloadavg()),
        "other_processes_cpu_cores": other.cores,
    }

    if per_layer:
        log(f"[{name} batch {batch}] per-layer timing (one-layer model files, {layer_repeats} repeats each)")
        layers = []
        act = x
        feed = {}  # the activations entering each layer, from TF's own run
        import keras
        for layer in km.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            feed[layer.name] = act
            act = layer(act, training=False)
            # np.array copies: np.asarray of a TF tensor is read-only, which predict refuses
            act = np.array(act)
        for lname, ltype, lpath, lm in single_layer_files(km, tmpdir, f"{name}_b{batch}"):
            xin = feed[lname]
            if xin.ndim == 2:
                xin = xin.reshape(xin.shape[0], 1, 1, xin.shape[1])
            xin = np.ascontiguousarray(xin, np.float32)
            lrt = sparseinfer.load(lpath)
            ltf = TFRunner(tf, lm, lrt.input_shape)
            r = interleaved({"runtime": lambda: lrt.predict(xin), "tf_function": lambda: ltf(xin)},
                            layer_repeats, 2)
            c = compare(lrt.predict(xin), ltf(xin))
            layers.append({"layer": lname, "type": ltype, "runtime_ms": r["runtime"]["median_ms"],
                           "runtime_iqr_ms": r["runtime"]["iqr_ms"],
                           "tf_function_ms": r["tf_function"]["median_ms"],
                           "tf_function_iqr_ms": r["tf_function"]["iqr_ms"],
                           "ratio_tf_over_runtime": r["tf_function"]["median_ms"] / r["runtime"]["median_ms"],
                           "max_rel_diff": c.get("max_rel_diff")})
            log(f"    {lname:14s} {ltype:13s} runtime {r['runtime']['median_ms']:9.3f} ms   "
                f"tf.fn {r['tf_function']['median_ms']:9.3f} ms   ratio {layers[-1]['ratio_tf_over_runtime']:.2f}")
            del lrt, ltf, lm
            lpath.unlink(missing_ok=True)
        case["per_layer"] = layers
        keras.backend.clear_session()
    del rt, km, tfr
    return case


def fmt_table(cases: list[dict]) -> str:
    hdr = ("| case | runtime median (IQR) ms | runtime min | tf.function median (IQR) ms | tf.fn min | "
           "TF/runtime (medians) | keras predict (1 call) ms | max abs diff | max rel diff | agree | other load |")
    lines = [hdr, "|" + "---|" * 11]
    for c in cases:
        rt, tf_ = c["runtime"], c["tf_function"]
        o = c["outputs"]
        lines.append(
            f"| {c['model']} b{c['batch']} | {rt['median_ms']:.3f} ({rt['iqr_ms']:.3f}) | {rt['min_ms']:.3f} | "
            f"{tf_['median_ms']:.3f} ({tf_['iqr_ms']:.3f}) | {tf_['min_ms']:.3f} | {c['ratio_tf_over_runtime']:.2f} | "
            f"{c['keras_predict']['single_call_ms']:.1f} | {o.get('max_abs_diff', float('nan')):.2e} | "
            f"{o.get('max_rel_diff', float('nan')):.2e} | {'yes' if o['ok'] else 'NO'} | "
            f"{c['other_processes_cpu_cores'] if c['other_processes_cpu_cores'] is not None else float('nan'):.2f} cores |")
    return "\n".join(lines)


def fmt_layers(c: dict) -> str:
    lines = [f"{c['model']} batch {c['batch']}, per layer (one-layer files, medians):",
             "| layer | type | runtime ms | tf.function ms | TF/runtime |", "|---|---|---|---|---|"]
    for l in c["per_layer"]:
        lines.append(f"| {l['layer']} | {l['type']} | {l['runtime_ms']:.3f} | {l['tf_function_ms']:.3f} | "
                     f"{l['ratio_tf_over_runtime']:.2f} |")
    tr = sum(l["runtime_ms"] for l in c["per_layer"])
    tt = sum(l["tf_function_ms"] for l in c["per_layer"])
    lines.append(f"| sum | | {tr:.3f} | {tt:.3f} | {tt / tr:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats for the LeNet-5 cases (default 200 at batch 1, 50 at batch 64)")
    ap.add_argument("--vgg-repeats", type=int, default=7, help="timed repeats for VGG19 (default 7)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "timing.json"), help="output JSON")
    ap.add_argument("--quick", action="store_true", help="few repeats, no per-layer timing")
    ap.add_argument("--no-layers", action="store_true", help="skip per-layer timing")
    ap.add_argument("--no-vgg", action="store_true", help="skip VGG19")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(TF_INTRA)
    tf.config.threading.set_inter_op_parallelism_threads(TF_INTER)

    info = machine_info(tf)
    log(f"machine: {info['cpu_model']}, {info['cpu_count']} CPUs; numpy {info['numpy']}, "
        f"TF {info['tensorflow']}, keras {info['keras']}, MKL {info.get('mkl_package')} "
        f"(max threads {info.get('mkl_max_threads')}); load average {info['loadavg_start']}")

    quick = args.quick
    per_layer = not (quick or args.no_layers)
    rep1 = args.repeats or (20 if quick else 200)
    rep64 = args.repeats or (10 if quick else 50)
    repv = min(args.vgg_repeats, 3) if quick else args.vgg_repeats
    rng = np.random.default_rng(args.seed)
    cases = []
    with tempfile.TemporaryDirectory(prefix="si_bench_") as td:
        tmpdir = Path(td)
        lenet = ROOT / "models" / "lenet5.npz"
        x64 = rng.random((64, 28, 28, 1), dtype=np.float32)  # pixels/255 in [0, 1)
        cases.append(run_case(tf, "lenet5", lenet, 1, rep1, 20, x64[:1], per_layer, tmpdir, rep1))
        cases.append(run_case(tf, "lenet5", lenet, 64, rep64, 5, x64, per_layer, tmpdir, rep64))
        if not args.no_vgg:
            vpath = tmpdir / "vgg19.npz"
            log(f"[vgg19] generating He-scaled weights (seed {args.seed}) and exporting to a temp file")
            t0 = time.perf_counter()
            make_vgg19(vpath, args.seed)
            log(f"[vgg19]   {vpath.stat().st_size / 1e6:.0f} MB written in {time.perf_counter() - t0:.1f} s")
            xv = rng.standard_normal((1, 224, 224, 3), dtype=np.float32)
            cases.append(run_case(tf, "vgg19", vpath, 1, repv, 2, xv, per_layer, tmpdir, max(3, repv)))

    info["loadavg_end"] = list(os.getloadavg())
    info["total_seconds"] = time.perf_counter() - t_start
    print()
    print(fmt_table(cases))
    for c in cases:
        if "per_layer" in c:
            print()
            print(fmt_layers(c))
    print(f"\nload average start {info['loadavg_start']}, end {info['loadavg_end']}; "
          f"total {info['total_seconds']:.0f} s")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "cases": cases,
                               "notes": {"tf_function": "model(x, training=False) in tf.function, numpy in, .numpy() out",
                                         "runtime": "sparseinfer Model.predict, numpy in/out, default threads",
                                         "agree": f"max|runtime-tf| / max|tf| <= {REL_TOL}"}}, indent=2) + "\n")
    log(f"wrote {out}")
    return 0 if all(c["outputs"]["ok"] for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
