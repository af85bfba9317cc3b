"""Issue 12's whole-model ratios from an infer_peers.py JSON, per round as well as overall.

    python bench/peers_ratio.py RESULT.json [--model vgg19] [--profile dense] [--batch 1]
                                [--target 0.6] [--own-target 0.9]

`../shared/peers/infer_peers.py --json RESULT.json --systems deepsparse,sparseinfer,sparseinfer_int8`
reports each system's median over all its timed calls. On a shared VM one noisy round moves
that median (the tenth session's 0.66x came from 10 calls, 32-70 ms each). The harness runs
the systems in rounds, interleaved, and its JSON keeps each round's median
(`block_medians_ms`), so the ratio can also be taken round by round, both sides measured
within seconds of each other. This prints, for sparseinfer_int8 against deepsparse and
against sparseinfer (fp32):

  - the ratio of the harness's medians (what its table implies);
  - the median of the per-round ratios and their range;
  - how many rounds meet the target.

Exit status 0 if both the harness ratio and the per-round median meet the target, 1 if not,
2 if the JSON lacks the systems.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys


def rows(doc, model, profile, batch):
    out = {}
    for r in doc.get("results", []):
        if r.get("model") == model and r.get("profile") == profile and r.get("batch") == batch:
            out[r["system"]] = r
    return out


def compare(num, den, target, label):
    a, b = num["block_medians_ms"], den["block_medians_ms"]
    if len(a) != len(b) or not a:
        raise ValueError(f"{label}: rounds differ ({len(a)} against {len(b)})")
    per = [x / y for x, y in zip(a, b)]
    overall = num["median_ms"] / den["median_ms"]
    med = statistics.median(per)
    ok = sum(r <= target for r in per)
    print(f"{label:28s} harness {overall:6.3f}  per-round median {med:6.3f} "
          f"(range {min(per):.3f}-{max(per):.3f}, {ok} of {len(per)} rounds <= {target})  target {target}")
    return overall <= target and med <= target


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json")
    ap.add_argument("--model", default="vgg19")
    ap.add_argument("--profile", default="dense")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.6, help="int8 / DeepSparse (0.5 with VNNI, 0.6 on AVX2)")
    ap.add_argument("--own-target", type=float, default=0.9, help="int8 / own fp32 (0.6 with VNNI, 0.9 on AVX2)")
    a = ap.parse_args(argv)
    with open(a.json) as fh:
        doc = json.load(fh)
    r = rows(doc, a.model, a.profile, a.batch)
    need = {"sparseinfer_int8", "deepsparse", "sparseinfer"}
    if not need <= set(r):
        print(f"{a.json}: {a.model}/{a.profile} batch {a.batch} lacks {sorted(need - set(r))}", file=sys.stderr)
        return 2
    machine = (doc.get("meta") or {}).get("machine") or doc.get("machine") or "?"
    print(f"# {a.json}: {a.model} {a.profile} batch {a.batch}; {machine}")
    for s in ("deepsparse", "sparseinfer", "sparseinfer_int8"):
        print(f"#   {s:17s} median {r[s]['median_ms']:8.2f} ms, rounds {r[s]['block_medians_ms']}")
    ok = compare(r["sparseinfer_int8"], r["deepsparse"], a.target, "int8 / DeepSparse fp32")
    ok &= compare(r["sparseinfer_int8"], r["sparseinfer"], a.own_target, "int8 / own fp32")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
