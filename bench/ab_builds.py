"""Time builds of the runtime against each other, alternating, on one plan.

    python bench/ab_builds.py MODEL.npz BUILD_A.so BUILD_B.so ... [--runs 4] [--calls 100]
                              [--layers block5_conv1,fc1] [--batch 1] [--threads 2]

Each BUILD is a copy of the Python extension `sparseinfer/_core*.so` made after building a
variant (`python setup.py build_ext --inplace`, then `cp sparseinfer/_core*.so /tmp/a.so`).
That file is the one to swap: it compiles the kernels in. `sparseinfer/lib/libsparseinfer.so`
is the C API's library, which Python never loads; the seventh session's comparisons swapped
that one and so timed one build against itself (docs/performance.md).

Every build runs on the plan the first build's planner makes: the plan cache's keys name the
build (a rebuilt library times its kernels afresh), so the first build's times are written
under every build's key in a private cache file. Otherwise the planner's own noise (two
entries within a few percent) would change the algorithms between builds.

The builds then take turns, --runs rounds: in each, every build in a fresh process loads the
model, runs 3 warm-up calls and --calls timed predict calls (the mean is printed), and with
--layers the medians of profile_layers for those layers. The environment is passed on, so
ISA caps (SPARSEINFER_ISA, SPARSEINFER_DISABLE, MKL_ENABLE_INSTRUCTIONS) apply to every run.
The extension in place before is put back at the end.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, numpy as np, sparseinfer
path, calls, batch, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = sparseinfer.load(path)
x = np.random.default_rng(0).standard_normal((batch,) + tuple(m.input_shape)).astype(np.float32)
if calls == 0:  # plan only
    print(json.dumps({}))
    sys.exit(0)
for _ in range(3):
    m.predict(x)
t = time.perf_counter()
for _ in range(calls):
    m.predict(x)
out = {"ms": (time.perf_counter() - t) / calls * 1e3}
if layers:
    names = [l["name"] for l in m.layers()]
    algo = {l["name"]: l["algo_batch1" if batch == 1 else "algo_batchn"] for l in m.layers()}
    p = np.median(m.profile_layers(x, repeats=15, warmup=2), axis=0) * 1e3
    out["layers"] = {n: [algo[n], float(p[names.index(n)])] for n in layers.split(",")}
    out["sum"] = float(p.sum())
print(json.dumps(out))
"""


def _core_path() -> str:
    spec = importlib.util.find_spec("sparseinfer")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("ab_builds: sparseinfer is not importable from this Python")
    found = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_core*.so"))
    if len(found) != 1:
        sys.exit(f"ab_builds: expected one sparseinfer/_core*.so, found {found}")
    return found[0]


def _run(build: str, core: str, args, cache: str, calls: int) -> dict:
    shutil.copyfile(build, core)
    env = dict(os.environ, SPARSEINFER_CACHE=cache)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    r = subprocess.run([sys.executable, "-c", CHILD, args.model, str(calls), str(args.batch), args.layers or ""],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ab_builds: {os.path.basename(build)} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _unified_plan(builds: list[str], core: str, args, out: str) -> None:
    """The first build's plan times under every build's key"""
    per_build = []
    with tempfile.TemporaryDirectory() as d:
        for i, b in enumerate(builds):
            cache = os.path.join(d, f"plan{i}.tsv")
            _run(b, core, args, cache, 0)
            with open(cache) as f:
                per_build.append([ln.rstrip("\n").split("\t", 1) for ln in f if "\t" in ln])
    first = per_build[0]

    def problem(key: str) -> str:  # the key without its build stamp
        return "|".join(p for p in key.split("|") if not p.startswith("lib="))

    times = {problem(k): v for k, v in first}
    lines = []
    for entries in per_build:
        for k, v in entries:
            lines.append(f"{k}\t{times.get(problem(k), v)}\n")
    with open(out, "w") as f:
        f.writelines(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("builds", nargs="+", help="copies of sparseinfer/_core*.so")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS (default: as set)")
    ap.add_argument("--layers", default="", help="comma list: also per-layer medians (profile_layers)")
    args = ap.parse_args()
    if len(args.builds) < 2:
        ap.error("give at least two builds")
    for b in args.builds:
        if not os.path.isfile(b):
            ap.error(f"no such build: {b}")
    core = _core_path()
    saved = tempfile.NamedTemporaryFile(delete=False, suffix=".so").name
    shutil.copyfile(core, saved)
    fd, cache = tempfile.mkstemp(suffix=".tsv")
    os.close(fd)
    results = {b: [] for b in args.builds}
    try:
        print("planning once per build (the first one's plan for all) ...", flush=True)
        _unified_plan(args.builds, core, args, cache)
        for r in range(args.runs):
            for b in args.builds:
                res = _run(b, core, args, cache, args.calls)
                results[b].append(res["ms"])
                extra = ""
                if "layers" in res:
                    extra = "  " + " ".join(f"{n} {a} {t:.3f}" for n, (a, t) in res["layers"].items())
                    extra += f"  sum {res['sum']:.2f}"
                print(f"run {r + 1}  {os.path.basename(b):24s} {res['ms']:8.2f} ms{extra}", flush=True)
    finally:
        shutil.copyfile(saved, core)
        os.unlink(saved)
        os.unlink(cache)
    print("\nbuild                     median ms   min     max    (predict loop, %d calls, %d runs)" % (args.calls, args.runs))
    base = statistics.median(results[args.builds[0]])
    for b, ts in results.items():
        med = statistics.median(ts)
        print(f"{os.path.basename(b):24s} {med:9.2f} {min(ts):7.2f} {max(ts):7.2f}   {med / base:.3f}x the first")


if __name__ == "__main__":
    main()
