"""``sparseinfer-prune``: the commands that need TensorFlow, apart from the runtime's
``sparseinfer`` (which never imports this package).

    sparseinfer-prune CONFIG_OR_MODEL [...]        prune a model file (= python -m prune)
    sparseinfer-prune prune CONFIG_OR_MODEL [...]  the same
    sparseinfer-prune import WEIGHTS --out M.npz   VGG19 weights from .npy/.h5/.keras (= python -m prune.vgg_import)
    sparseinfer-prune eval MODEL DIR [...]         top-1/top-5 on an image folder by TensorFlow and
                                                   the runtime (= python -m prune.evaluate)

Installed by ``pip install 'sparseinfer[prune]'``.
"""
from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _dispatch(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:  # argparse's usage error (2) or --help (0), as a status
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2


def _dispatch(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if argv[:1] == ["import"]:
        from .vgg_import import main as import_main
        return import_main(argv[1:], prog="sparseinfer-prune import")
    if argv[:1] == ["eval"]:
        from .evaluate import main as evaluate_main
        return evaluate_main(argv[1:], prog="sparseinfer-prune eval")
    if argv[:1] == ["prune"]:
        argv = argv[1:]
    from .__main__ import main as prune_main
    return prune_main(argv, prog="sparseinfer-prune")


if __name__ == "__main__":
    sys.exit(main())
