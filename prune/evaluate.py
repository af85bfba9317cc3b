"""Top-1 / top-5 accuracy of a model file on a labelled image folder, by TensorFlow and by
the C runtime side by side, on the same weights and the same preprocessed inputs.

    python -m prune.evaluate MODEL.npz FOLDER [--labels FILE] [--split test --seed 0] [--json]

FOLDER is a folder of class folders or, with ``--labels``, a flat folder and its label list
(prune.imagefolder; docs/imagenet_data.md). Each batch comes from
``prune.imagefolder.make_dataset`` (exactly ``sparseinfer.preprocess.load_image`` per
image) and goes to both the Keras model rebuilt from the file
(``prune.keras_io.keras_from_model_file``) and ``sparseinfer.load(MODEL).predict``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence, TextIO

import numpy as np

from .imagefolder import MAX_UPSCALE, ImageSet, image_errors, load_images, make_dataset, split_images

__all__ = ["topk_hits", "model_classes", "evaluate", "format_table", "main"]

TOP_K = 5


def topk_hits(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample, whether its label is among the ``k`` highest outputs (ties: lower index
    first, like ``np.argsort(-p, kind="stable")``)."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} do not match")
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def _top_sets_differ(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    ta = np.sort(np.argsort(-a, axis=1, kind="stable")[:, :k], axis=1)
    tb = np.sort(np.argsort(-b, axis=1, kind="stable")[:, :k], axis=1)
    return (ta != tb).any(axis=1)


def model_classes(model_path: str | os.PathLike) -> list[str] | None:
    """The class names stored in the model file (the writer checks there is one per
    output), or None: then folders are matched as prune.imagefolder says (ImageNet-1k
    synset ids, else sorted folder names)."""
    from sparseinfer.format import read_manifest

    from sparseinfer.labels import imagenet_class_names

    own = read_manifest(model_path).get("classes")
    if not own:
        return None
    own = [str(c) for c in own]
    # ImageNet's own names (the 1000 first lemmas): match synset folders by ImageNet-1k order
    return None if own == imagenet_class_names() else own


def evaluate(model_path: str | os.PathLike, images: ImageSet, *, batch_size: int = 32,
             threads: int | None = None, max_upscale: float | None = MAX_UPSCALE,
             progress: Callable[[str], None] | None = None, progress_every: float = 10.0,
             keras_model: Any = None, runtime: Any = None) -> dict:
    """Top-1 and top-5 accuracy of the model file on ``images`` by TensorFlow and by the runtime.

    ``images`` labels must index the model's outputs (``len(images.classes)`` equal to the
    output count). ``progress``: called with a line every ``progress_every`` seconds and at
    the end. Returns a dict: ``images``, ``k``, ``tf`` and ``runtime`` (``top1``, ``top5``
    as fractions, ``top1_correct``, ``top5_correct``), ``top1_differ`` (images whose top-1
    class differs between the two), ``top5_differ`` (whose top-5 sets differ),
    ``max_abs_diff`` (largest |p_tf - p_runtime|) and ``seconds``.
    Raises ImageError naming the file if an image cannot be used.
    ``keras_model``, ``runtime``: the file already loaded by keras_from_model_file and
    sparseinfer.load (to evaluate several folders without loading a large model again).
    """
    import sparseinfer

    from .keras_io import keras_from_model_file

    path = os.fspath(model_path)
    if runtime is None:
        runtime = sparseinfer.load(path, threads=threads)
    n_out = int(runtime.output_size)
    if len(images.classes) != n_out:
        hint = ("; for ImageNet name the class folders by synset id (n01440764 ...) or give "
                "synset ids in the label list") if n_out == 1000 else ""
        raise ValueError(f"{images.root}: labels index {len(images.classes)} classes "
                         f"({images.describe()}), but {path} has {n_out} outputs{hint}")
    if len(images) == 0:
        raise ValueError(f"{images.root}: no images to evaluate")
    if keras_model is None:
        keras_model = keras_from_model_file(path)
    spec = runtime.input_spec
    k = min(TOP_K, n_out)
    n = len(images)
    hits = {"tf": np.zeros(2, np.int64), "runtime": np.zeros(2, np.int64)}
    differ1 = differ5 = 0
    max_diff = 0.0
    done = 0
    t0 = last = time.perf_counter()
    ds = make_dataset(images, spec, batch_size=batch_size, max_upscale=max_upscale)
    with image_errors():
        for x, y in ds.as_numpy_iterator():
            p_tf = np.asarray(keras_model(x, training=False), dtype=np.float32)
            p_rt = runtime.predict(x)
            for name, p in (("tf", p_tf), ("runtime", p_rt)):
                hits[name] += (int(topk_hits(p, y, 1).sum()), int(topk_hits(p, y, k).sum()))
            differ1 += int((p_tf.argmax(1) != p_rt.argmax(1)).sum())
            differ5 += int(_top_sets_differ(p_tf, p_rt, k).sum())
            max_diff = max(max_diff, float(np.abs(p_tf - p_rt).max()))
            done += len(y)
            now = time.perf_counter()
            if progress is not None and (now - last >= progress_every or done == n):
                last = now
                rate = done / (now - t0)
                left = (n - done) / rate if rate > 0 else 0.0
                progress(f"{done:,}/{n:,} images ({100.0 * done / n:.1f}%), {rate:.1f} images/s, "
                         f"top-1 so far TF {100.0 * hits['tf'][0] / done:.2f}% runtime "
                         f"{100.0 * hits['runtime'][0] / done:.2f}%"
                         + (f", about {left / 60:.1f} min left" if done < n else ""))
    if done != n:
        raise RuntimeError(f"evaluated {done} images, expected {n}")
    out: dict[str, Any] = {"model": path, "images": n, "classes": n_out, "k": k}
    for name in ("tf", "runtime"):
        c1, ck = (int(v) for v in hits[name])
        out[name] = {"top1": c1 / n, f"top{TOP_K}": ck / n, "top1_correct": c1, f"top{TOP_K}_correct": ck}
    out.update({"top1_differ": differ1, f"top{TOP_K}_differ": differ5, "max_abs_diff": max_diff,
                "seconds": time.perf_counter() - t0})
    return out


def format_table(r: Mapping[str, Any]) -> str:
    """The result of evaluate() as a small table."""
    t = f"top-{TOP_K}"
    lines = [f"{'':12s}{'images':>9s}{'top-1':>10s}{t:>10s}"]
    for name, label in (("tf", "TensorFlow"), ("runtime", "runtime")):
        v = r[name]
        lines.append(f"{label:12s}{r['images']:9,d}{100 * v['top1']:9.2f}%{100 * v[f'top{TOP_K}']:9.2f}%")
    lines.append(f"predictions differ: top-1 on {r['top1_differ']} of {r['images']:,} images, "
                 f"top-{TOP_K} sets on {r[f'top{TOP_K}_differ']}; "
                 f"max |p_tf - p_runtime| {r['max_abs_diff']:.2e}; {r['seconds']:.1f} s")
    return "\n".join(lines)


def _size(text: str) -> int | float | None:
    if text == "rest":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count, a fraction or 'rest'") from None


def build_parser(prog: str = "python -m prune.evaluate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(
        "Top-1 and top-5 accuracy of a sparseinfer model file on a labelled image folder, "
        "by TensorFlow and by the C runtime on the same weights and inputs."))
    p.add_argument("model", help="model file (.npz)")
    p.add_argument("folder", help="folder of class folders, or a flat folder with --labels")
    p.add_argument("--labels", metavar="FILE", help="label list for a flat folder: lines '<file> <label>'")
    p.add_argument("--split", choices=("train", "val", "test"),
                   help="evaluate one part of the per-class split (default: every image)")
    p.add_argument("--sizes", nargs=3, type=_size, default=[30, 10, 10], metavar=("TRAIN", "VAL", "TEST"),
                   help="split sizes per class: counts, fractions or 'rest' (default 30 10 10)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--threads", type=int, default=None, help="runtime kernel threads")
    p.add_argument("--max-upscale", type=float, default=MAX_UPSCALE,
                   help=f"refuse images that preprocessing would enlarge more than this per side "
                        f"(default {MAX_UPSCALE:g}; 0: no limit)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m prune.evaluate",
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    a = build_parser(prog).parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    out = stdout or sys.stdout
    err = stderr or sys.stderr

    def say(msg: str) -> None:
        if not a.quiet:
            print(f"{prog}: {msg}", file=err, flush=True)

    try:
        classes = model_classes(a.model)
        images = load_images(a.folder, a.labels, classes)
        what = images.describe()
        if a.split:
            train, val, test = a.sizes
            images = split_images(images, train, val, test, seed=a.seed)[a.split]
            what = f"{a.split} split (sizes {' '.join('rest' if s is None else str(s) for s in a.sizes)} " \
                   f"per class, seed {a.seed}): {images.describe()}"
        say(what)
        r = evaluate(a.model, images, batch_size=a.batch, threads=a.threads,
                     max_upscale=a.max_upscale or None, progress=say)
    except (OSError, ValueError, RuntimeError) as e:  # ImageError is a ValueError
        print(f"{prog}: error: {e}", file=err)
        return 1
    r.update({"folder": a.folder, "labels": a.labels, "split": a.split,
              "sizes": a.sizes if a.split else None, "seed": a.seed if a.split else None})
    if a.json:
        print(json.dumps(r, indent=1), file=out)
    else:
        print(format_table(r), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
