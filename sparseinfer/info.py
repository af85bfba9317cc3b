"""What `sparseinfer info` reports, as data: per layer shapes, parameters, non-zeros, storage,
bytes and the planner's picks with its measured times; totals; the load and plan cost."""
from __future__ import annotations

import os
import time
from typing import Any


def model_info(path: str, exec: str = "auto", sparse: str = "auto", threads: int | None = None,
               **plan: Any) -> dict:
    from . import cpu, isa, load
    t0 = time.perf_counter()
    model = load(path, threads=threads, exec=exec, sparse=sparse, **plan)
    load_s = time.perf_counter() - t0
    layers = model.layers()
    # A compact layer: the C side counts its streams' data; here the bytes they take in the
    # file (ZIP members, .npy headers and deflate included), as for `info`'s stream table.
    from .storage import file_streams
    streams = file_streams(path)["layers"]
    for l in layers:
        st = streams.get(l["name"])
        if st and st["storage"].startswith("compact"):
            l["storage"], l["bytes"] = "compact", st["bytes"]
    dense_params = sum(l["params"] for l in layers)
    weights = sum(l["weight_shape"][0] * l["weight_shape"][1] for l in layers if l["weight_shape"])
    nnz = sum(l["nnz"] for l in layers)
    return {"model": path, "name": model.name, "input_shape": list(model.input_shape),
            "output_size": model.output_size, "layers": layers,
            "total": {"params": dense_params, "weights": weights, "nnz": nnz,
                      "density": nnz / weights if weights else 0.0,
                      "bytes": sum(l["bytes"] for l in layers),
                      "memory_bytes": sum(l["memory_bytes"] for l in layers),
                      "dense_bytes": 4 * dense_params},
            "file_bytes": os.path.getsize(path),
            "cpu": cpu(), "isa": isa(), "load_seconds": load_s, "plan": model.plan_stats(),
            "max_batch": model.max_batch or None}
