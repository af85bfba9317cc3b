"""The pruning report: JSON, Markdown, weight histograms and accuracy against compression.

Written by prune.pruner.prune into ``report_dir``:

* ``report.json``: everything (configuration, per-step history, per-layer results,
  evaluation by TensorFlow and the C runtime, file sizes, run time, peak memory);
* ``report.md``: the same as tables;
* ``hist_<layer>.png``: the layer's weights before and after pruning (non-zeros);
* ``accuracy_vs_compression.png``: validation accuracy after each step against compression.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

__all__ = ["write_report", "file_stats"]


def file_stats(path: str) -> dict:
    """Per-layer weights, non-zeros, storage and bytes of a model file (read with NumPy)."""
    from .keras_io import load_weights
    from sparseinfer.format import csr_bytes

    manifest, weights = load_weights(path)
    layers = {}
    for l in manifest["layers"]:
        if l["type"] not in ("conv2d", "dense"):
            continue
        w, b = weights[l["name"]]
        nnz = int(np.count_nonzero(w))
        fmt = l["weight"]["format"]
        nbytes = w.nbytes if fmt == "dense" else csr_bytes(nnz, w.shape[0], w.shape[1])
        layers[l["name"]] = {"shape": list(w.shape), "weights": int(w.size), "nnz": nnz, "storage": fmt,
                             "weight_bytes": int(nbytes), "bias": 0 if b is None else int(b.size)}
    return {"file_bytes": os.path.getsize(path), "layers": layers,
            "weights": sum(v["weights"] for v in layers.values()),
            "nnz": sum(v["nnz"] for v in layers.values()),
            "params_nonzero": sum(v["nnz"] + v["bias"] for v in layers.values()),
            "weight_bytes": sum(v["weight_bytes"] for v in layers.values())}


def _runtime_info(path: str) -> dict | None:
    try:
        from sparseinfer.info import model_info
        # the runtime's own count of the file; no timing and batch 1's forms alone: the
        # report needs no plan, and a full-size VGG19 planned for any batch holds 1.3 GB more
        info = model_info(path, plan="nomeasure", max_batch=1, cache="")
    except Exception as e:  # noqa: BLE001 - the report still has TensorFlow's numbers
        return {"error": str(e)}
    return {"nnz": {l["name"]: l["nnz"] for l in info["layers"] if l["weight_shape"]},
            "storage": {l["name"]: l["storage"] for l in info["layers"] if l["weight_shape"]},
            "total_nnz": info["total"]["nnz"], "bytes": info["total"]["bytes"]}


def _plots(result: dict, report_dir: str, original: Mapping[str, np.ndarray], model: Any) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, w0 in original.items():
        w1 = np.asarray(model.get_layer(name).kernel.numpy()).ravel()
        w1 = w1[w1 != 0]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        lim = float(np.abs(w0).max())
        bins = np.linspace(-lim, lim, 121)
        axes[0].hist(w0.ravel(), bins=bins, color="tab:blue")
        axes[0].set_title(f"{name} before: {w0.size:,} weights")
        axes[1].hist(w1, bins=bins, color="tab:orange")
        t = result["layers"][name]["threshold"]
        for ax in axes:
            ax.set_xlabel("weight")
            ax.set_ylabel("count")
        if t > 0:
            for x in (-t, t):
                axes[1].axvline(x, color="k", lw=0.8, ls="--")
        axes[1].set_title(f"{name} after: {w1.size:,} non-zeros "
                          f"({w1.size / w0.size:.1%}, q {result['layers'][name]['q']:.2f})")
        fig.tight_layout()
        f = f"hist_{name}.png"
        fig.savefig(os.path.join(report_dir, f), dpi=90)
        plt.close(fig)
        files.append(f)

    hist = result["history"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    acc = [h for h in hist if h["accepted"]]
    rej = [h for h in hist if not h["accepted"]]
    ax.plot([1.0] + [h["compression"] for h in acc], [100 * result["baseline_val"]] + [100 * h["val_after"] for h in acc],
            "o-", ms=3, label="step kept (val, after fine-tuning)")
    if rej:
        ax.plot([h["compression"] for h in rej], [100 * h["val_after"] for h in rej], "rx",
                label="step rejected (restored)")
    ev = result["evaluation"]
    comp = result["file"]["compression"]
    if ev.get("tf_val") is not None:
        ax.plot([comp], [100 * ev["tf_val"]], "g*", ms=12, label="final file, val")
    if ev.get("runtime_test") is not None:
        ax.plot([comp], [100 * ev["runtime_test"]], "kD", ms=7, label="final file, test (C runtime)")
    ax.axhline(100 * result["baseline_val"], color="gray", lw=0.8, ls=":", label="dense baseline (val)")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v in (2, 3, 5, 8, 15, 20, 30) else ""))
    ax.set_xlabel("compression (dense weights / non-zeros)")
    ax.set_ylabel("accuracy (%)")
    lo = min([100 * h["val_after"] for h in acc] + [100 * result["baseline_val"]])
    ax.set_ylim(max(lo - 0.5, 90.0), 100.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("accuracy against compression")
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "accuracy_vs_compression.png"), dpi=90)
    plt.close(fig)
    files.append("accuracy_vs_compression.png")
    return files


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _markdown(r: dict) -> str:
    f, fi = r["file"], r["input_file"]
    ev = r["evaluation"]
    names = list(r["layers"])
    lines = [f"# Pruning report: {r['output_model']}", ""]
    if r.get("command"):
        lines += ["Command:", "", "```", r["command"], "```", ""]
    lines += [f"Input `{r['input_model']}` ({fi['nnz']:,} non-zero weights, {fi['file_bytes']:,} B file) -> "
              f"`{r['output_model']}` ({f['nnz']:,} non-zero weights, {f['file_bytes']:,} B file).", "",
              f"**Compression: {f['compression']:.2f}x** fewer non-zero weights ({f['dense_weights']:,} / {f['nnz']:,}); "
              f"weight bytes {f['dense_weight_bytes']:,} -> {f['weight_bytes']:,} "
              f"({f['dense_weight_bytes'] / max(1, f['weight_bytes']):.2f}x); "
              f"file {fi['file_bytes']:,} -> {f['file_bytes']:,} B "
              f"({fi['file_bytes'] / max(1, f['file_bytes']):.2f}x).", "",
              f"Parameters (non-zero weights + biases): {fi['params_nonzero']:,} -> {f['params_nonzero']:,}.", "",
              "| | validation | test |", "|---|---|---|",
              f"| dense baseline (TensorFlow) | {_pct(r['baseline_val'])} | {_pct(r.get('baseline_test'))} |",
              f"| pruned file, TensorFlow (keras_from_model_file) | {_pct(ev['tf_val'])} | {_pct(ev['tf_test'])} |",
              f"| pruned file, C runtime | {_pct(ev['runtime_val'])} | {_pct(ev['runtime_test'])} |", "",
              "Validation: the last images of the training set (every decision); test: the MNIST "
              "test set, evaluated once on the written file, never used for a decision.", "",
              f"Run time {r['run_seconds']:.0f} s ({r['run_seconds'] / 60:.1f} min"
              + (f", resumed {r['resumed']} time(s)" if r.get("resumed") else "")
              + f"), peak memory (max RSS) {r['peak_rss_mib']:.0f} MiB, {r['threads']} threads, "
              f"TensorFlow {r['tensorflow']}.", "",
              "## Layers", "",
              "| layer | weight shape | weights | non-zeros | density | q | threshold | storage | bytes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        L = r["layers"][n]
        fl = f["layers"].get(n, {})
        shape = "x".join(map(str, fl.get("shape", L["shape"])))
        lines.append(f"| {n} | {shape} | {L['weights']:,} | {fl.get('nnz', L['nnz_after_pruning']):,} | "
                     f"{fl.get('nnz', L['nnz_after_pruning']) / L['weights']:.2%} | {L['q']:.2f} | {L['threshold']:.4g} | "
                     f"{fl.get('storage', '-')} | {fl.get('weight_bytes', 0):,} |")
    lines.append(f"| total | | {f['dense_weights']:,} | {f['nnz']:,} | {f['nnz'] / f['dense_weights']:.2%} | | | | "
                 f"{f['weight_bytes']:,} |")
    lines.append("")
    lines.append("Density is against the original layer size; weight shapes are the file's (one row "
                 "per output, after dead-neuron removal).")
    d = r.get("dead_neurons")
    if d:
        lines += ["", "Dead neurons removed: " + ", ".join(
            f"{n} {v['before']} -> {v['after']} ({v['removed_no_in']} without inputs, "
            f"{v['removed_no_out']} without outputs)" for n, v in d["layers"].items())
                  + f"; {d['connections_removed']} non-zero connections went with them, "
                  f"{d['bias_folds']} constant outputs folded into the next bias."]
    rt = r.get("runtime_info")
    if rt and "nnz" in rt:
        lines += ["", f"`sparseinfer info`: non-zeros {rt['total_nnz']:,} ("
                  + ", ".join(f"{k} {v:,}" for k, v in rt["nnz"].items())
                  + f"); they {'match' if rt['matches_file'] else 'DO NOT match'} the file."]
    lines += ["", "## Steps", "",
              "Density per layer after the step; validation accuracy right after pruning (before) and "
              "after fine-tuning.", "",
              "| step | group | q | " + " | ".join(names) + " | non-zeros | compression | val before | val after | epochs | kept | s |",
              "|---|---|---|" + "---|" * len(names) + "---|---|---|---|---|---|---|"]
    for h in r["history"]:
        lines.append(f"| {h['step']} | {h['group']} | {h['q']:.2f} | "
                     + " | ".join(f"{h['density'][n]:.1%}" for n in names)
                     + f" | {h['nnz']:,} | {h['compression']:.2f}x | {_pct(h['val_before'])} | {_pct(h['val_after'])} | "
                     f"{h['epochs']} | {'yes' if h['accepted'] else '**no**, restored'} | {h['seconds']:.0f} |")
    fin = r.get("final_finetune")
    if fin:
        lines += ["", f"Final fine-tuning of all layers ({len(fin['val_per_epoch'])} epochs, masks held): "
                  f"validation {_pct(fin['val_before'])} -> per epoch "
                  + ", ".join(_pct(v) for v in fin["val_per_epoch"])
                  + f"; kept epoch {fin['kept_epoch']} ({_pct(fin['val_after'])})."]
    if r.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in r["plots"]]
    return "\n".join(lines) + "\n"


def write_report(result: dict, config: Any, original: Mapping[str, np.ndarray], model: Any,
                 verbose: bool = True) -> None:
    """Complete ``result`` (file statistics, runtime info, plots) and write the report files."""
    os.makedirs(config.report_dir, exist_ok=True)
    f = file_stats(config.out)
    fi = file_stats(config.model)
    dense_weights = int(sum(v.size for v in original.values()))
    f["dense_weights"] = dense_weights
    f["dense_weight_bytes"] = 4 * dense_weights
    f["compression"] = dense_weights / max(1, f["nnz"])
    result["file"], result["input_file"] = f, fi
    rt = _runtime_info(config.out)
    if rt and "nnz" in rt:
        rt["matches_file"] = all(rt["nnz"].get(n) == v["nnz"] for n, v in f["layers"].items()) \
            and rt["total_nnz"] == f["nnz"]
    result["runtime_info"] = rt
    try:
        result["baseline_test"] = json.load(open(config.model[:-4] + ".train.json"))["test_accuracy"]
    except (OSError, ValueError, KeyError):
        result["baseline_test"] = None
    result["plots"] = _plots(result, config.report_dir, original, model) if config.plots else []
    with open(os.path.join(config.report_dir, "report.json"), "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    with open(os.path.join(config.report_dir, "report.md"), "w") as fh:
        fh.write(_markdown(result))
    if verbose:
        print(f"compression {f['compression']:.2f}x ({dense_weights:,} -> {f['nnz']:,} non-zero weights), "
              f"file {fi['file_bytes']:,} -> {f['file_bytes']:,} B; report in {config.report_dir}/", flush=True)
