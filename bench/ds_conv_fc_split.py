"""DeepSparse's time on VGG19's convolutions and on its fully connected head, apart.

The peers harness (../shared/peers/infer_peers.py) times whole models. To see how much of
DeepSparse's fp32 VGG19 is the fc head, which streams 494 MB of float weights per batch-1 call
and so scales with a machine's read bandwidth rather than its vector pipes, this script cuts
the harness's own ONNX file at block5_pool (onnx.utils.Extractor) and times the whole model,
the convolutions and the head in one DeepSparse process, in interleaved rounds (medians of per-
round medians). The head's input is a ReLU-like random tensor (its time does not depend on the
values). Run it with the DeepSparse venv of ../shared/peers (which has onnx), e.g.

    NM_ARCH=avx2 $PEERS_DS_PY bench/ds_conv_fc_split.py ARTIFACTS/vgg19_dense.onnx ARTIFACTS/vgg19_dense_io.npz
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", help="the harness's vgg19_dense.onnx")
    ap.add_argument("io", help="the harness's vgg19_dense_io.npz (x_b1)")
    ap.add_argument("--cut", default="block5_pool", help="the tensor between the two parts (default block5_pool)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=15, help="timed calls a part a round")
    ap.add_argument("--json", default=None, help="write the figures here too")
    a = ap.parse_args()

    import onnx
    import onnx.utils
    from deepsparse import compile_model

    model = onnx.load(a.onnx)  # once (onnx.utils.extract_model loads and checks the file per call)
    g, cut = model.graph, onnx.utils.Extractor(model)
    parts = {"convolutions": cut.extract_model([g.input[0].name], [a.cut]),
             "fc head": cut.extract_model([a.cut], [g.output[0].name])}
    cut_shape = [dim.dim_value or 1 for dim in parts["fc head"].graph.input[0].type.tensor_type.shape.dim]
    x = np.ascontiguousarray(np.load(a.io)["x_b1"], dtype=np.float32)
    engines = {"whole": compile_model(a.onnx, batch_size=1)}
    with tempfile.TemporaryDirectory() as d:
        for name, part in parts.items():
            path = os.path.join(d, name.replace(" ", "_") + ".onnx")
            onnx.save(part, path)
            engines[name] = compile_model(path, batch_size=1)
    del model, cut, parts
    rng = np.random.default_rng(0)
    inputs = {"whole": x, "convolutions": x,
              "fc head": np.maximum(rng.standard_normal(cut_shape), 0).astype(np.float32)}
    eng = engines["whole"]
    print(f"DeepSparse isa {getattr(eng, 'cpu_avx_type', '?')}, vnni {getattr(eng, 'cpu_vnni', '?')}, "
          f"cores {getattr(eng, 'num_cores', '?')}; NM_ARCH={os.environ.get('NM_ARCH', '')}", file=sys.stderr)
    per_round = {k: [] for k in engines}
    order = list(engines)
    for r in range(a.rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            e, xi = engines[k], inputs[k]
            for _ in range(3):
                e.run([xi])
            ts = []
            for _ in range(a.calls):
                t0 = time.perf_counter()
                e.run([xi])
                ts.append(time.perf_counter() - t0)
            per_round[k].append(float(np.median(ts)) * 1e3)
        print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
    out = {"onnx": a.onnx, "cut": a.cut, "nm_arch": os.environ.get("NM_ARCH", ""),
           "median_ms": {k: float(np.median(v)) for k, v in per_round.items()}, "rounds_ms": per_round}
    for k, v in out["median_ms"].items():
        print(f"{k:<14}{v:9.2f} ms")
    print(f"fc head / whole {out['median_ms']['fc head'] / out['median_ms']['whole']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
