# cython: language_level=3, boundscheck=False, wraparound=False
"""Python skin over the C runtime: a Model owns one si_model and one si_context."""
import json
import threading

import numpy as np

from libc.stdint cimport int64_t, uint32_t
from libc.string cimport memset
from libc.stdlib cimport malloc, free
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from sparseinfer._csparseinfer cimport *

LAYER_TYPES = ("conv2d", "dense", "maxpool2d", "relu", "softmax", "flatten")
STORAGE = ("none", "dense", "csr", "compact")
EXEC = {-1: "none", 0: "dense", 1: "sparse", 2: "sparse-mkl"}
POLICIES = {"auto": SI_POLICY_AUTO, "dense": SI_POLICY_DENSE, "sparse": SI_POLICY_SPARSE}
SPARSE_IMPLS = {"auto": SI_SPARSE_AUTO, "own": SI_SPARSE_OWN, "mkl": SI_SPARSE_MKL}
PLAN_MODES = {"measure": SI_PLAN_MEASURE, "nomeasure": SI_PLAN_NO_MEASURE, "remeasure": SI_PLAN_REMEASURE}


class SparseInferError(RuntimeError):
    """A failure reported by the C runtime; ``status`` is its si_status_t name."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


cdef _raise(si_status_t st):
    cdef bytes detail = si_last_error()
    raise SparseInferError(si_status_str(st).decode(), detail.decode("utf-8", "replace"))


def version():
    return si_version().decode()


def read_bandwidth(size_t nbytes=1 << 30, int repeats=5):
    """This machine's read bandwidth in GB/s: the median of `repeats` streaming reads of
    `nbytes` by the runtime's threads (the yardstick for memory-bound kernels)."""
    cdef double r
    with nogil:
        r = si_util_read_bandwidth(nbytes, repeats)
    if r < 0:
        raise MemoryError(f"cannot allocate {nbytes} bytes to measure bandwidth")
    return r


def cpu():
    """This CPU as the planner's cache keys it: vendor, family, model and brand string."""
    return si_cpu_name().decode("utf-8", "replace")


def plan_cache_file():
    """The planner's cache file for loads that name none ("" when SPARSEINFER_CACHE="")."""
    return si_plan_cache_file().decode("utf-8", "replace")


def isa():
    """The instruction set the kernels use now: "portable", "avx2" or "avx512"."""
    return si_isa_name().decode()


def int8_isa():
    """The int8 dot product the dense int8 GEMM uses now (under the ISA cap and
    SPARSEINFER_DISABLE): "avx512_vnni", "avx_vnni", "avx2" (no VNNI) or "portable"."""
    return si_int8_isa_name().decode()


def set_isa(str name):
    """Cap the kernels' instruction set ("auto", "portable", "avx2", "avx512") for this
    process; models loaded afterwards are planned and run with it. Raises if the CPU
    lacks it. Not while another thread runs a model."""
    cdef bytes b = name.encode()
    cdef si_status_t st = si_set_isa(b)
    if st != SI_OK:
        _raise(st)


def set_reference_kernels(bint on):
    """Force the plain reference kernels (for tests holding the fast path against them)."""
    si_set_reference_kernels(on)


cdef bint _all_finite(const float[:, ::1] x) noexcept nogil:
    """No NaN or infinity in x (without the boolean array np.isfinite would allocate): an
    exponent of all ones. Blocks of 4,096 floats without an early exit inside, so the C
    compiler vectorises the test (the element loop with a return took 3% of LeNet-5's run at
    batch 64, Intel SPR)."""
    cdef Py_ssize_t n = x.shape[0] * x.shape[1], i0, i, i1
    cdef const uint32_t *u
    cdef uint32_t bad
    if n == 0:
        return True
    u = <const uint32_t *> &x[0, 0]
    i0 = 0
    while i0 < n:
        i1 = i0 + 4096 if i0 + 4096 < n else n
        bad = 0
        for i in range(i0, i1):
            bad |= (u[i] & 0x7f800000u) == 0x7f800000u
        if bad:
            return False
        i0 = i1
    return True


cdef class Model:
    """A model loaded by the C runtime. ``predict`` is safe to call from several threads
    (runs on one Model are serialised; load the file twice to run in parallel)."""
    cdef si_model *_m
    cdef si_context *_ctx
    cdef int _ctx_batch
    cdef readonly int threads
    cdef readonly int max_batch  # the load's max_batch (0: any batch; 1: batch 1's plan, samples one at a time)
    cdef readonly str path
    cdef object _lock
    cdef object _manifest

    def __cinit__(self):
        self._m = NULL
        self._ctx = NULL
        self._ctx_batch = 0

    def __init__(self, path, threads=None, bytes data=None, exec="auto", sparse="auto", plan="measure",
                 plan_batch=0, cache=None, max_memory_bytes=None, max_batch=None):
        cdef si_status_t st
        cdef bytes bpath
        cdef bytes bcache
        cdef const char *buf
        cdef size_t n
        cdef si_load_options opt
        cdef int prev
        self._lock = threading.Lock()
        self.threads = int(threads or 0)
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        if exec not in POLICIES:
            raise ValueError(f"exec must be one of {sorted(POLICIES)}, got {exec!r}")
        if sparse not in SPARSE_IMPLS:
            raise ValueError(f"sparse must be one of {sorted(SPARSE_IMPLS)}, got {sparse!r}")
        if plan not in PLAN_MODES:
            raise ValueError(f"plan must be one of {sorted(PLAN_MODES)}, got {plan!r}")
        plan_batch = int(plan_batch or 0)
        if not 0 <= plan_batch <= 4096:
            raise ValueError(f"plan_batch must be in [0, 4096], got {plan_batch}")
        if max_memory_bytes is not None and (isinstance(max_memory_bytes, bool) or int(max_memory_bytes) != max_memory_bytes
                                             or not 0 < int(max_memory_bytes) < 2**62):
            raise ValueError(f"max_memory_bytes must be a positive integer below 2**62 (or None for the default: "
                             f"256 MB + 64 x the file's bytes), got {max_memory_bytes!r}")
        if max_batch is not None and (isinstance(max_batch, bool) or int(max_batch) != max_batch
                                      or not 1 <= int(max_batch) <= 2**30):
            raise ValueError(f"max_batch must be a positive integer (or None: any batch), got {max_batch!r}")
        memset(&opt, 0, sizeof(opt))  # fields this binding does not set take their defaults
        opt.struct_size = sizeof(si_load_options)
        opt.policy = POLICIES[exec]
        opt.sparse_impl = SPARSE_IMPLS[sparse]
        opt.plan = PLAN_MODES[plan]
        opt.plan_batch = plan_batch
        opt.max_memory_bytes = 0 if max_memory_bytes is None else int(max_memory_bytes)
        opt.max_batch = 0 if max_batch is None else int(max_batch)
        self.max_batch = opt.max_batch
        opt.cache_path = NULL
        if cache is not None:
            bcache = str(cache).encode()
            opt.cache_path = bcache
        if data is not None:
            self.path = "<buffer>"
            buf = data
            n = len(data)
            with nogil:
                prev = si_set_num_threads(self.threads)  # the plan is timed with the threads it will run with
                st = si_model_load_buffer_ex(buf, n, &opt, &self._m)
                si_set_num_threads(prev)
        else:
            self.path = str(path)
            bpath = self.path.encode()
            buf = bpath
            with nogil:
                prev = si_set_num_threads(self.threads)
                st = si_model_load_file_ex(buf, &opt, &self._m)
                si_set_num_threads(prev)
        if st != SI_OK:
            _raise(st)
        try:
            self._manifest = json.loads(si_model_manifest(self._m).decode("utf-8"))
        except ValueError as exc:  # the C parser accepted what Python's json does not
            raise SparseInferError("invalid model file", f"{self.path}: model.json: {exc}") from None

    @classmethod
    def from_bytes(cls, bytes data, threads=None, exec="auto", sparse="auto", plan="measure", plan_batch=0,
                   cache=None, max_batch=None):
        return cls(None, threads=threads, data=data, exec=exec, sparse=sparse, plan=plan, plan_batch=plan_batch,
                   cache=cache, max_batch=max_batch)

    def __dealloc__(self):
        if self._ctx != NULL:
            si_context_free(self._ctx)
        if self._m != NULL:
            si_model_free(self._m)

    @property
    def manifest(self):
        return self._manifest

    @property
    def input_shape(self):
        cdef int64_t hwc[3]
        si_model_input_shape(self._m, hwc)
        return (hwc[0], hwc[1], hwc[2])

    @property
    def output_size(self):
        return si_model_output_size(self._m)

    @property
    def input_spec(self):
        return self._manifest.get("input", {})

    @property
    def classes(self):
        return self._manifest.get("classes")

    @property
    def name(self):
        return self._manifest.get("name", "")

    def layers(self):
        """One dict per layer: name, type, output shape, weight matrix shape, dense
        parameter count, non-zeros, storage and bytes (as in the file, and as loaded), and
        how it executes at batch 1 and above, with the planner's reason."""
        cdef si_layer_info info
        cdef const char *names[16]
        cdef double secs[16]
        cdef int nc, g, j
        out = []
        for i in range(si_model_num_layers(self._m)):
            info.struct_size = sizeof(si_layer_info)
            if si_model_layer_info(self._m, i, &info) != SI_OK:
                _raise(SI_OK)
            cands = []
            for g in range(2):
                nc = si_model_layer_candidates(self._m, i, g, names, secs, 16)
                cands.append({names[j].decode(): (secs[j] if secs[j] >= 0 else None) for j in range(min(nc, 16))})
            out.append({
                "name": info.name.decode("utf-8", "replace"),
                "type": LAYER_TYPES[<int>info.type],
                "output_shape": [info.out_shape[0], info.out_shape[1], info.out_shape[2]],
                "weight_shape": [info.rows, info.cols] if info.storage else None,
                "params": info.params,
                "nnz": info.nnz,
                "storage": STORAGE[<int>info.storage],
                "bytes": info.weight_bytes,
                "memory_bytes": info.memory_bytes,
                "exec_batch1": EXEC[<int>info.exec_batch1],
                "exec_batchn": EXEC[<int>info.exec_batchn],
                "why": info.why.decode("utf-8", "replace") if info.storage else "",
                "algo_batch1": info.algo_batch1.decode(),
                "algo_batchn": info.algo_batchn.decode(),
                "plan_batch": [info.plan_batch1, info.plan_batchn] if info.storage else None,
                "plan_positions": [info.plan_positions1, info.plan_positionsn] if info.storage else None,
                "dtype": info.dtype.decode(),     # "float32", "int8" or "" (no weights)
                "quant": ({"input": (info.in_scale, info.in_zero_point),
                           "output": (info.out_scale, info.out_zero_point) if info.out_scale > 0 else None}
                          if info.dtype == b"int8" else None),
                "candidates_batch1": cands[0],   # entry -> measured seconds (None: not timed)
                "candidates_batchn": cands[1],
            })
        return out

    def plan_stats(self):
        """What planning cost at load: seconds timing candidates, and layer regimes timed
        now or taken from the cache."""
        cdef double sec
        cdef int measured, cached
        si_model_plan_stats(self._m, &sec, &measured, &cached)
        return {"seconds": sec, "measured": measured, "cached": cached}

    cdef _ensure_context(self, int batch):
        cdef si_status_t st
        if self._ctx != NULL and self._ctx_batch >= batch:
            return
        if self._ctx != NULL:
            si_context_free(self._ctx)
            self._ctx = NULL
        st = si_context_create(self._m, batch, &self._ctx)
        if st != SI_OK:
            _raise(st)
        self._ctx_batch = batch

    def predict(self, x):
        """Run an NHWC float32 batch (or one HWC sample) and return the outputs, one row
        per sample (probabilities when the model ends in softmax)."""
        arr = np.asarray(x)
        shape = self.input_shape
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
            raise ValueError(f"input must be NHWC with sample shape {shape}, got {np.asarray(x).shape}")
        if arr.shape[0] == 0:
            return np.zeros((0, self.output_size), np.float32)
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"input must be numeric, got dtype {arr.dtype}")
        cdef const float[:, ::1] xin = np.ascontiguousarray(arr.reshape(arr.shape[0], -1), dtype=np.float32)
        if not _all_finite(xin):
            raise ValueError("input holds NaN or infinite values")
        cdef int64_t n = xin.shape[0], out_n = self.output_size
        out = np.empty((n, out_n), np.float32)
        cdef float[:, ::1] yout = out
        # Samples per C call: a context holds two activation buffers per sample, and a
        # VGG-sized sample needs about 25 MB of them.
        cdef int chunk = <int>min(n, 64 if xin.shape[1] < 50000 else 8)
        cdef int64_t i = 0
        cdef int b
        cdef si_status_t st = SI_OK
        cdef int prev
        with self._lock:
            self._ensure_context(chunk)
            with nogil:
                prev = si_set_num_threads(self.threads)
                while i < n:
                    b = <int>min(<int64_t>chunk, n - i)
                    st = si_run(self._ctx, &xin[i, 0], b, &yout[i, 0])
                    if st != SI_OK:
                        break
                    i += b
                si_set_num_threads(prev)
        if st != SI_OK:
            _raise(st)
        return out

    def trace(self, x, layers=None):
        """Every layer's output for an NHWC batch (at most 64 samples): a list with one float32
        array of shape (samples, h, w, c) per layer (None for layers not in ``layers``, a
        collection of indices), int8 layers' outputs dequantized. What calibrating a model for
        int8 reads (sparseinfer.quantize); the layers run unfused, so slower than predict."""
        arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        shape = self.input_shape
        if arr.ndim != 4 or tuple(arr.shape[1:]) != shape or not 1 <= arr.shape[0] <= 64:
            raise ValueError(f"trace needs 1..64 samples of shape {shape}, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("input holds NaN or infinite values")
        cdef const float[:, ::1] xin = arr.reshape(arr.shape[0], -1)
        cdef int n = xin.shape[0], nl = si_model_num_layers(self._m), i
        infos = self.layers()
        outs = []
        for i in range(nl):
            if layers is None or i in layers:
                outs.append(np.empty((n, *infos[i]["output_shape"]), np.float32))
            else:
                outs.append(None)
        cdef float **ptrs = <float **>malloc(sizeof(float *) * nl)
        if ptrs == NULL:
            raise MemoryError()
        cdef float[:, :, :, ::1] view
        for i in range(nl):
            if outs[i] is None:
                ptrs[i] = NULL
            else:
                view = outs[i]
                ptrs[i] = &view[0, 0, 0, 0]
        cdef si_status_t st = SI_OK
        cdef int prev
        try:
            with self._lock:
                self._ensure_context(n)
                with nogil:
                    prev = si_set_num_threads(self.threads)
                    st = si_run_trace(self._ctx, &xin[0, 0], n, ptrs)
                    si_set_num_threads(prev)
        finally:
            free(ptrs)
        if st != SI_OK:
            _raise(st)
        return outs

    def _timed_batch(self, x, str what, int repeats, int warmup):
        """The checks of the timing helpers: one batch of 1..64 samples of the input shape,
        as a contiguous float32 (samples, features) array."""
        arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        shape = self.input_shape
        if arr.ndim != 4 or tuple(arr.shape[1:]) != shape or not 1 <= arr.shape[0] <= 64:
            raise ValueError(f"{what} needs 1..64 samples of shape {shape}, got {arr.shape}")
        if repeats < 1 or warmup < 0:
            raise ValueError("repeats must be >= 1 and warmup >= 0")
        return arr.reshape(arr.shape[0], -1)

    def profile_layers(self, x, int repeats=5, int warmup=1):
        """Per-layer wall-clock seconds of ``repeats`` runs of one batch (at most 64
        samples), after ``warmup`` untimed runs: an array of shape (repeats, layers). A
        layer that ran inside the one before it (a max pool fused into its convolution)
        reads 0. The algorithm each layer ran is in ``layers()`` (algo_batch1 at batch 1,
        algo_batchn above)."""
        cdef const float[:, ::1] xin = self._timed_batch(x, "profile_layers", repeats, warmup)
        cdef int n = xin.shape[0], nl = si_model_num_layers(self._m)
        out = np.empty((n, self.output_size), np.float32)
        cdef float[:, ::1] yout = out
        times = np.zeros((warmup + repeats, nl), np.float64)
        cdef double[:, ::1] tv = times
        cdef int i, prev
        cdef si_status_t st = SI_OK
        with self._lock:
            self._ensure_context(n)
            with nogil:
                prev = si_set_num_threads(self.threads)
                for i in range(warmup + repeats):
                    si_context_set_profile(self._ctx, &tv[i, 0])
                    st = si_run(self._ctx, &xin[0, 0], n, &yout[0, 0])
                    if st != SI_OK:
                        break
                si_context_set_profile(self._ctx, NULL)
                si_set_num_threads(prev)
        if st != SI_OK:
            _raise(st)
        return times[warmup:]

    def time_runs(self, x, int repeats=5, int warmup=1):
        """Benchmark helper: run one batch (at most 64 samples) ``warmup`` + ``repeats``
        times back to back in C, timing each si_run call alone (no Python in the loop).
        Returns (seconds per run as an array, the output of the last run)."""
        cdef const float[:, ::1] xin = self._timed_batch(x, "time_runs", repeats, warmup)
        cdef int n = xin.shape[0]
        out = np.empty((n, self.output_size), np.float32)
        cdef float[:, ::1] yout = out
        times = np.empty(repeats, np.float64)
        cdef double[::1] tv = times
        cdef timespec t0, t1
        cdef int i, prev
        cdef si_status_t st = SI_OK
        with self._lock:
            self._ensure_context(n)
            with nogil:
                prev = si_set_num_threads(self.threads)
                for i in range(warmup + repeats):
                    clock_gettime(CLOCK_MONOTONIC, &t0)
                    st = si_run(self._ctx, &xin[0, 0], n, &yout[0, 0])
                    clock_gettime(CLOCK_MONOTONIC, &t1)
                    if st != SI_OK:
                        break
                    if i >= warmup:
                        tv[i - warmup] = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9
                si_set_num_threads(prev)
        if st != SI_OK:
            _raise(st)
        return times, out
