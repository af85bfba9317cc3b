"""The int8 kernels (issue 12) against their references, bit for bit on every ISA variant the
CPU has, optimised and under ASan + UBSan: kernels/tests/run_igemm.sh (ops/si_igemm.c: VNNI,
AVX-VNNI, AVX2 vpmaddwd, portable) and kernels/tests/run_int8_ops.sh (csr/si_csr_i8.c and the
uint8 activation ops of ops/si_ops_u8.c); kernels/tests/run_igemm_amx.sh: the AMX GEMM where the
CPU and the OS have AMX (elsewhere it checks the kernel says it is unavailable).

test_csrmv_edge_rows: the csrmv loops of the three batch-1 entries (fc_csrmv_i8: the active
ISA's, fc_csrmv_i8_avx2, fc_csrmv_i8_nogather) on rows of chosen lengths (0, 1, 3, 16, 17, 64,
65, ... 300) packed against x's end, at its start and spread, with x ending where a PROT_NONE
page begins: the gathers read 4 bytes at x + col and AddressSanitizer does not see them, so an
over-read past x's end faults here instead.

test_csrmv_entries_match_numpy: the same entries through the registry (each forced by
SPARSEINFER_ALGO on a one-layer int8 model) against the NumPy integer reference, bit for bit,
under every ISA cap this CPU has."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

import sparseinfer
from sparseinfer.format import write_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.usefixtures("c_tools")
@pytest.mark.parametrize("script", ["run_igemm.sh", "run_igemm_amx.sh", "run_int8_ops.sh"])
def test_int8_kernels(script):
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", os.path.join(ROOT, "kernels", "tests", script)], capture_output=True, text=True,
                       env=env, timeout=600)
    out = f"--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    assert r.returncode == 0, f"{script} exited {r.returncode}\n{out}"
    runs = re.findall(r"^(\d+) passed, (\d+) failed", r.stdout, re.M)
    assert len(runs) == 2, f"expected two 'N passed, M failed' lines (optimised, sanitized)\n{out}"
    least = 1 if script == "run_igemm_amx.sh" else 100  # without AMX: only the "unavailable" checks
    for passed, failed in runs:
        assert int(failed) == 0 and int(passed) >= least, out


# Every ISA variant of every entry's loop against si_i8_csrmv_ref, bit for bit (float output
# with mul 1 and add 0, exact while |sum| < 2^24: rows of at most 300 non-zeros of |127 * 255|).
# It prints the ISA it detected and, per entry and ISA, how many matrices that loop ran on.
_EDGE_C = r"""
#define _GNU_SOURCE
#include "si_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t nx(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static const struct { si_i8_mv_loop loop; const char *entry; } loops[] = {
    {SI_I8_MV_ACTIVE, "fc_csrmv_i8"}, {SI_I8_MV_AVX2, "fc_csrmv_i8_avx2"}, {SI_I8_MV_NOGATHER, "fc_csrmv_i8_nogather"}};
enum { NLOOPS = sizeof loops / sizeof loops[0] };
int main(void) {
    si_init();
    int ran[3][NLOOPS] = {{0}};
    printf("detected %s\n", si_isa_str(si_isa_detected()));
    static const int64_t colss[] = {1, 2, 3, 4, 5, 17, 100, 4096, 25088, 65536, 66000};
    static const int lens[] = {0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 66, 67, 100, 129, 300};
    const int nl = (int)(sizeof lens / sizeof lens[0]);
    int runs = 0, fails = 0;
    for (unsigned ci = 0; ci < sizeof colss / sizeof colss[0]; ci++)
        for (int use16 = 0; use16 <= 1; use16++) {
            const int64_t cols = colss[ci], rows = 3 * nl;
            if (use16 && cols > 65536) continue;
            int64_t *ptr = malloc(sizeof(int64_t) * (size_t)(rows + 1));
            int32_t *col = malloc(4 * (size_t)(3 * 300 * nl));
            uint16_t *c16 = malloc(2 * (size_t)(3 * 300 * nl));
            int8_t *val = malloc((size_t)(3 * 300 * nl));
            int64_t nnz = 0;
            ptr[0] = 0;
            for (int64_t r = 0; r < rows; r++) { /* placement r % 3: at the end, at the start, spread */
                const int64_t len = lens[r / 3] < cols ? lens[r / 3] : cols;
                for (int64_t j = 0; j < len; j++) {
                    const int64_t c = r % 3 == 0 ? cols - len + j
                                    : r % 3 == 1 ? j : j * cols / len + (int64_t)(nx() % (uint64_t)(cols / len));
                    col[nnz] = (int32_t)c;
                    c16[nnz] = (uint16_t)c;
                    val[nnz] = (int8_t)(nx() & 1 ? 127 : -127 + (int)(nx() % 255));
                    nnz++;
                }
                ptr[r + 1] = nnz;
            }
            const size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = ((size_t)cols + pg - 1) / pg;
            uint8_t *map = mmap(NULL, (np + 1) * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (map == MAP_FAILED || mprotect(map + np * pg, pg, PROT_NONE)) { perror("mmap"); return 2; }
            uint8_t *x = map + np * pg - cols; /* x ends where the PROT_NONE page begins */
            for (int64_t i = 0; i < cols; i++) x[i] = (uint8_t)(i % 7 ? nx() : 255);
            si_csr8_view A = {val, use16 ? NULL : col, use16 ? c16 : NULL, ptr, rows, cols};
            float *mul = malloc(4 * (size_t)rows), *add = malloc(4 * (size_t)rows);
            for (int64_t r = 0; r < rows; r++) { mul[r] = 1.0f; add[r] = 0.0f; }
            si_requant rq;
            memset(&rq, 0, sizeof rq);
            rq.mul = mul; rq.add = add; rq.act = SI_ACT_LINEAR; rq.out_u8 = 0;
            float *yr = malloc(4 * (size_t)rows), *y = malloc(4 * (size_t)rows);
            si_i8_csrmv_ref(&A, x, &rq, yr);
            for (si_isa isa = SI_ISA_PORTABLE; isa <= si_isa_detected(); isa++)
                for (int li = 0; li < NLOOPS; li++) {
                    si_dispatch_select(isa);
                    if (!si_i8_csrmv_has(loops[li].loop)) continue;
                    memset(y, 0xCD, 4 * (size_t)rows);
                    if (li == 0) si_i8_csrmv(&A, x, &rq, y);
                    else si_i8_csrmv_loop(loops[li].loop, &A, x, &rq, y);
                    runs++;
                    ran[isa][li]++;
                    for (int64_t r = 0; r < rows; r++)
                        if (memcmp(y + r, yr + r, 4)) {
                            printf("FAIL %s [%s] cols %lld %s: row %lld, element y[%lld] (%d non-zeros, placement "
                                   "%s): %.9g, ref %.9g\n",
                                   loops[li].entry, si_isa_str(isa), (long long)cols, use16 ? "col16" : "col32",
                                   (long long)r, (long long)r, lens[r / 3],
                                   r % 3 == 0 ? "at x's end" : r % 3 == 1 ? "at x's start" : "spread",
                                   (double)y[r], (double)yr[r]);
                            fails++;
                            break;
                        }
                }
            si_dispatch_select(si_isa_detected());
            munmap(map, (np + 1) * pg);
            free(ptr); free(col); free(c16); free(val); free(mul); free(add); free(yr); free(y);
        }
    for (int isa = 0; isa <= (int)si_isa_detected(); isa++)
        for (int li = 0; li < NLOOPS; li++)
            printf("ran %s %s %d\n", loops[li].entry, si_isa_str((si_isa)isa), ran[isa][li]);
    printf("%d passed, %d failed\n", runs - fails, fails);
    return fails != 0;
}
"""

_ORDER = ["portable", "avx2", "avx512"]


def _applies(entry: str, isa: str) -> bool:
    """The batch-1 int8 CSR entries' rule: fc_csrmv_i8 everywhere, fc_csrmv_i8_avx2 only above
    AVX2 (at AVX2 it would be fc_csrmv_i8 itself), fc_csrmv_i8_nogather from AVX2 up."""
    i = _ORDER.index(isa)
    return {"fc_csrmv_i8": True, "fc_csrmv_i8_avx2": i > 1, "fc_csrmv_i8_nogather": i >= 1}[entry]


ENTRIES = ("fc_csrmv_i8", "fc_csrmv_i8_avx2", "fc_csrmv_i8_nogather")


@pytest.mark.usefixtures("c_tools")
def test_csrmv_edge_rows(tmp_path):
    src = tmp_path / "csrmv_edges.c"
    src.write_text(_EDGE_C)
    exe = tmp_path / "csrmv_edges"
    kernels = os.path.join(ROOT, "kernels")
    build = (f"source {shlex.quote(os.path.join(kernels, 'tests', 'mkl_env.sh'))} && "
             f"cc -std=c11 -O2 -fopenmp -I{shlex.quote(kernels)} -I\"$MKL_INC\" "
             f"$(find {shlex.quote(kernels)} -path {shlex.quote(os.path.join(kernels, 'tests'))} -prune -o -name 'si_*.c' -print) "
             f"{shlex.quote(str(src))} -L\"$MKL_LIB\" -l:libmkl_rt.so.3 -Wl,-rpath,\"$MKL_LIB\" -lm -lz "
             f"-o {shlex.quote(str(exe))}")
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", "-c", build], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"build failed\n{r.stderr[-4000:]}"
    r = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=600)
    out = f"--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    assert r.returncode == 0, f"exit status {r.returncode} (-11: a read past x's end)\n{out}"
    m = re.search(r"^(\d+) passed, (\d+) failed", r.stdout, re.M)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 21, out
    # every entry's loop ran on all 21 matrices under every ISA cap where it applies, and no other
    detected = re.search(r"^detected (\w+)", r.stdout, re.M).group(1)
    ran = {(e, i): int(n) for e, i, n in re.findall(r"^ran (\w+) (\w+) (\d+)", r.stdout, re.M)}
    for isa in _ORDER[:_ORDER.index(detected) + 1]:
        for entry in ENTRIES:
            want = 21 if _applies(entry, isa) else 0
            assert ran.get((entry, isa)) == want, f"{entry} under {isa}: ran on {ran.get((entry, isa))} matrices, expected {want}\n{out}"


def _int8_dense(rng: np.random.Generator, rows_len: list[int], cols: int) -> tuple[list[dict], np.ndarray]:
    """One int8 dense layer (float output) whose row i has rows_len[i // 3] non-zeros (at most
    cols) placed against x's end (i % 3 == 0), at its start (1) or spread (2); values of
    magnitude up to 127, many at 127."""
    n = 3 * len(rows_len)
    W = np.zeros((n, cols), np.int8)
    for i in range(n):
        ln = min(rows_len[i // 3], cols)
        if ln == 0:
            continue
        c = (np.arange(cols - ln, cols) if i % 3 == 0 else np.arange(ln) if i % 3 == 1
             else np.sort(rng.choice(cols, ln, replace=False)))
        v = rng.integers(1, 128, ln) * rng.choice([-1, 1], ln)
        v[rng.random(ln) < 0.5] = 127
        W[i, c] = v
    ws = rng.uniform(0.5, 2.0, n).astype(np.float32) / 127
    b = rng.integers(-5000, 5000, n).astype(np.int32)
    layer = {"name": "fc", "type": "dense", "activation": "linear", "W": W, "b": b,
             "quant": {"input": (1.0 / 255, 0), "output": None, "weight_scale": ws}}
    x = (rng.integers(0, 256, (3, 1, 1, cols)) / 255.0).astype(np.float32)
    x[:, 0, 0, -4:] = 1.0  # x's last bytes 255: a wrong read near the end changes the sum
    return [layer], x


@pytest.mark.parametrize("isa", _ORDER)
@pytest.mark.parametrize("cols", [1000, 66000])  # uint16 columns; int32 (over 65,536 inputs, the most an int8 layer has)
def test_csrmv_entries_match_numpy(tmp_path, monkeypatch, isa, cols):
    if _ORDER.index(isa) > _ORDER.index(sparseinfer.isa()):
        pytest.skip(f"this CPU has {sparseinfer.isa()} at most")
    sys.path.insert(0, os.path.join(ROOT, "kernels", "tests"))
    import make_cases
    lens = [0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129, 255, 256, 257, 300]
    layers, x = _int8_dense(np.random.default_rng(cols), lens, cols)
    path = str(tmp_path / "fc_i8.npz")
    write_model(path, layers, {"shape": [1, 1, cols]}, storage="csr")
    want = make_cases.reference_forward_int8(layers, x.astype(np.float64)).astype(np.float32)
    try:
        sparseinfer.set_isa(isa)
        # unforced, the planner times every entry that applies (and only those)
        monkeypatch.delenv("SPARSEINFER_ALGO", raising=False)
        cands = sparseinfer.load(path, exec="auto", cache="").layers()[0]["candidates_batch1"]
        want_c = {e for e in ENTRIES if _applies(e, isa)}
        assert {e for e in cands if e in ENTRIES} == want_c, f"under {isa}: candidates {cands}, expected {want_c}"
        for entry in ENTRIES:
            monkeypatch.setenv("SPARSEINFER_ALGO", entry)
            m = sparseinfer.load(path, exec="sparse", cache="")
            info = m.layers()[0]
            assert info["dtype"] == "int8", info
            if not _applies(entry, isa):
                assert entry not in info["candidates_batch1"], f"{entry} is a candidate under {isa}"
                continue
            assert info["algo_batch1"] == entry, f"{entry} forced under {isa}, ran {info['algo_batch1']}"
            for s in range(len(x)):
                got = m.predict(x[s:s + 1]).reshape(-1)
                bad = np.flatnonzero(got.view(np.uint32) != want[s].view(np.uint32))
                if bad.size:
                    r = int(bad[0])
                    pytest.fail(f"{entry} [{isa}] cols {cols}, sample {s}: row {r}, element y[{r}] "
                                f"({np.count_nonzero(layers[0]['W'][r])} non-zeros, "
                                f"{['at x end', 'at x start', 'spread'][r % 3]}): {float(got[r]):.9g}, NumPy {float(want[s][r]):.9g} "
                                f"({bad.size} elements differ)")
    finally:
        sparseinfer.set_isa("auto")


# fc_skip_i8 (batch 1): reads only the weights of the non-zero inputs. Cases: (rows, cols,
# fraction of inputs at uint8 0, input zero point, activation, uint8 output).
_SKIP_CASES = [
    (1, 1, 0.0, 0, "linear", False),
    (31, 33, 0.5, 0, "relu", True),      # an odd count of non-zero inputs is likely
    (33, 1000, 0.0, 7, "linear", False),  # no zeros, a zero point: uint8 0 is then not the value 0
    (100, 1000, 0.5, 7, "relu", True),
    (64, 1000, 1.0, 0, "relu", True),     # every input 0: the bias alone
    (70, 999, 0.9, 0, "softmax", False),
    (40, 66000, 0.6, 3, "linear", False),  # the most inputs an int8 layer has
]


@pytest.mark.parametrize("case", range(len(_SKIP_CASES)))
def test_fc_skip_matches_numpy(tmp_path, monkeypatch, case):
    """fc_skip_i8 (int8 fully connected at batch 1 over the non-zero inputs' rows of W^T) gives
    the NumPy int8 reference's outputs bit for bit, whatever the share of zero inputs, with
    weights at +-127 against inputs at 255; it is a candidate from AVX2 up only."""
    if sparseinfer.isa() == "portable":
        pytest.skip("fc_skip_i8 needs AVX2")
    sys.path.insert(0, os.path.join(ROOT, "kernels", "tests"))
    import make_cases
    rows, cols, zfrac, zin, act, u8 = _SKIP_CASES[case]
    rng = np.random.default_rng(100 + case)
    W = rng.integers(-127, 128, (rows, cols)).astype(np.int8)
    W[rng.random(W.shape) < 0.3] = 127
    W[rng.random(W.shape) < 0.1] = -127
    scale = 1.0 / 64
    quant = {"input": (scale, zin), "weight_scale": rng.uniform(0.5, 2.0, rows).astype(np.float32) / 127 / cols,
             "output": (0.05, 3) if u8 else None}
    layers = [{"name": "fc", "type": "dense", "activation": act, "W": W,
               "b": rng.integers(-5000, 5000, rows).astype(np.int32), "quant": quant}]
    path = str(tmp_path / "skip.npz")
    write_model(path, layers, {"shape": [1, 1, cols]})
    q = rng.integers(1, 256, (2, cols))
    q[rng.random(q.shape) < zfrac] = 0
    q[:, -3:] = np.where(zfrac < 1.0, 255, 0)  # the last inputs at 255 (or 0 with every input 0)
    x = ((q - zin) * scale).astype(np.float32).reshape(2, 1, 1, cols)
    want = make_cases.reference_forward_int8(layers, x.astype(np.float64)).astype(np.float32)
    if act == "softmax":  # the softmax's float rounding is the runtime's: fc_igemm's outputs are the reference
        monkeypatch.setenv("SPARSEINFER_ALGO", "fc_igemm")
        m = sparseinfer.load(path, cache="")
        assert m.layers()[0]["algo_batch1"] == "fc_igemm"
        ig = np.stack([m.predict(x[s:s + 1]).reshape(-1) for s in range(len(x))])
        np.testing.assert_allclose(ig, want.reshape(ig.shape), rtol=1e-6, atol=0)
        want = ig
    monkeypatch.setenv("SPARSEINFER_ALGO", "fc_skip_i8")
    m = sparseinfer.load(path, cache="")
    info = m.layers()[0]
    assert info["algo_batch1"] == "fc_skip_i8", info
    for s in range(len(x)):
        got = m.predict(x[s:s + 1]).reshape(-1)
        bad = np.flatnonzero(got.view(np.uint32) != want[s].reshape(-1).view(np.uint32))
        if bad.size:
            r = int(bad[0])
            pytest.fail(f"case {_SKIP_CASES[case]}, sample {s} ({int(np.count_nonzero(q[s]))} non-zero inputs): "
                        f"element y[{r}] = {float(got[r]):.9g}, NumPy {float(want[s].reshape(-1)[r]):.9g} "
                        f"({bad.size} elements differ)")
    try:
        sparseinfer.set_isa("portable")
        monkeypatch.delenv("SPARSEINFER_ALGO")
        cands = sparseinfer.load(path, cache="").layers()[0]["candidates_batch1"]
        assert "fc_skip_i8" not in cands, cands
    finally:
        sparseinfer.set_isa("auto")


@pytest.mark.parametrize("case", range(len(_SKIP_CASES)))
def test_fc_skip_fp32_matches_numpy(tmp_path, monkeypatch, case):
    """fc_skip (fp32 fully connected at batch 1 over the non-zero inputs' rows of W^T) against
    the float64 NumPy forward pass: within 2e-6 of the largest |w| |x| sum of each output
    (float32 sums in another order), whatever the share of zero inputs; softmax outputs within
    2e-6 of the largest such sum of the sample."""
    if sparseinfer.isa() == "portable":
        pytest.skip("fc_skip needs AVX2")
    rows, cols, zfrac, _, act, _ = _SKIP_CASES[case]
    rng = np.random.default_rng(200 + case)
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    b = rng.standard_normal(rows).astype(np.float32)
    layers = [{"name": "fc", "type": "dense", "activation": act, "W": W, "b": b}]
    path = str(tmp_path / "skipf.npz")
    write_model(path, layers, {"shape": [1, 1, cols]})
    x = rng.uniform(0, 1, (2, cols)).astype(np.float32)
    x[rng.random(x.shape) < zfrac] = 0
    z = W.astype(np.float64) @ x.T.astype(np.float64) + b[:, None]
    bound = np.abs(W).astype(np.float64) @ np.abs(x.T).astype(np.float64) + np.abs(b)[:, None]
    if act == "relu":
        z = np.maximum(z, 0)
    if act == "softmax":
        e = np.exp(z - z.max(axis=0))
        z = e / e.sum(axis=0)
        bound = np.broadcast_to(bound.max(axis=0), z.shape)  # a logit's error moves the outputs by at most as much
    monkeypatch.setenv("SPARSEINFER_ALGO", "fc_skip")
    m = sparseinfer.load(path, cache="")
    assert m.layers()[0]["algo_batch1"] == "fc_skip", m.layers()[0]
    for s in range(len(x)):
        got = m.predict(x[s].reshape(1, 1, 1, cols)).reshape(-1).astype(np.float64)
        err = np.abs(got - z[:, s]) / np.maximum(bound[:, s], 1e-30)
        r = int(np.argmax(err))
        assert err[r] <= 2e-6, (f"case {_SKIP_CASES[case]}, sample {s}: element y[{r}] = {got[r]:.9g}, "
                                f"NumPy {z[r, s]:.9g} (error {err[r]:.3g} of the |w||x| sum)")
