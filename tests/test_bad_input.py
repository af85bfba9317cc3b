"""Damaged and hostile model files and images through Python and the CLI.

The bad model files are the ones the C loader test uses (kernels/tests/make_cases.py):
each must make sparseinfer.load raise SparseInferError with the expected status and a
message naming the problem, and make `sparseinfer info` / `sparseinfer run` exit non-zero
with a one-line error and no traceback.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import sparseinfer
from sparseinfer import cli
from sparseinfer.format import write_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "kernels", "tests"))
import make_cases  # noqa: E402

DIGIT = os.path.join(ROOT, "tests", "data", "digits", "digit_7_idx0.png")
CASES = {c.name: c for c in make_cases.BAD_CASES}


@pytest.fixture(scope="module")
def outdir(tmp_path_factory) -> str:
    d = str(tmp_path_factory.mktemp("cases"))
    make_cases.write_good(d)  # the base model the bad cases damage
    return d


@pytest.fixture(scope="module")
def built(outdir) -> dict[str, str]:
    return {c.name: make_cases.write_bad(outdir, c) for c in make_cases.BAD_CASES}


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory) -> str:
    """A small 28x28 gray model, for the image cases of `sparseinfer run`."""
    rng = np.random.default_rng(0)
    path = str(tmp_path_factory.mktemp("mnist") / "tiny.npz")
    write_model(path, [{"name": "flat", "type": "flatten"},
                       {"name": "fc", "type": "dense", "activation": "softmax",
                        "W": rng.standard_normal((10, 784)).astype(np.float32) * 0.01, "b": None}],
                {"shape": [28, 28, 1], "std": 255.0})
    return path


def _check_one_line(err: str, command: str, expect: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    assert lines[0].startswith(f"sparseinfer {command}: error: "), lines[0]
    assert expect in lines[0], f"{expect!r} not in {lines[0]!r}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_refuses(built, name):
    case, path = CASES[name], built[name]
    with pytest.raises(sparseinfer.SparseInferError) as ei:
        sparseinfer.load(path)
    e = ei.value
    assert e.status == make_cases.STATUS_WORDS[case.status], f"{name}: status {e.status!r}: {e}"
    assert case.expect in str(e), f"{name}: {case.expect!r} not in {str(e)!r}"
    assert os.path.basename(path) in str(e), f"{name}: the message does not name the file: {e}"
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as f:
            data = f.read()
        with pytest.raises(sparseinfer.SparseInferError) as ei:
            sparseinfer.Model.from_bytes(data)
        assert ei.value.status == e.status and case.expect in str(ei.value), str(ei.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_refuses(built, name, capsys):
    case, path = CASES[name], built[name]
    for argv in (["info", path], ["info", "--json", path], ["run", path, DIGIT]):
        rc = cli.main(argv)
        out, err = capsys.readouterr()
        assert rc != 0, f"{argv}: exit 0"
        assert out == "", f"{argv}: printed {out!r}"
        _check_one_line(err, argv[0], case.expect)


@pytest.mark.parametrize("name", ["bad_truncated_10", "bad_crc", "bad_json_deep", "bad_nonexistent",
                                  "bad_directory", "bad_savez_compressed", "bad_huge_activation"])
@pytest.mark.parametrize("command", ["info", "run"])
def test_cli_process_refuses(built, name, command):
    path = built[name]
    argv = [sys.executable, "-m", "sparseinfer.cli", command, path] + ([DIGIT] if command == "run" else [])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == "", r
    _check_one_line(r.stderr, command, CASES[name].expect)


def _bad_images(tmp_path) -> dict[str, tuple[str, str]]:
    text = tmp_path / "notes.png"
    text.write_text("this is a text file, not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8)))
    return {"not an image": (str(text), "not an image"), "empty": (str(empty), "empty file"),
            "truncated jpeg": (str(garbage), "not an image"),
            "missing": (str(tmp_path / "nope.png"), "no such image file"),
            "directory": (str(tmp_path), "no such image file")}


def test_run_refuses_bad_images(mnist_model, tmp_path, capsys):
    assert cli.main(["run", mnist_model, DIGIT]) == 0  # the model and a real image work
    capsys.readouterr()
    for what, (img, expect) in _bad_images(tmp_path).items():
        rc = cli.main(["run", mnist_model, img])
        out, err = capsys.readouterr()
        assert rc != 0 and out == "", what
        _check_one_line(err, "run", expect)
        assert img in err, f"{what}: the message does not name {img}: {err}"


@pytest.mark.parametrize("what", ["not an image", "empty", "missing"])
def test_run_process_refuses_bad_images(mnist_model, tmp_path, what):
    img, expect = _bad_images(tmp_path)[what]
    r = subprocess.run([sys.executable, "-m", "sparseinfer.cli", "run", mnist_model, img],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == "", r
    _check_one_line(r.stderr, "run", expect)
    assert img in r.stderr


def test_predict_wrong_shape(outdir):
    m = sparseinfer.load(os.path.join(outdir, "good_lenet.npz"))
    assert m.input_shape == (16, 16, 2)
    for bad in (np.zeros((1, 16, 16, 3), np.float32), np.zeros((16, 2), np.float32),
                np.zeros((2, 2, 16, 16, 2), np.float32), np.zeros((4, 16, 2, 16), np.float32)):
        with pytest.raises(ValueError, match=r"\(16, 16, 2\)") as ei:
            m.predict(bad)
        assert str(bad.shape) in str(ei.value), str(ei.value)
    assert m.predict(np.zeros((2, 16, 16, 2), np.float32)).shape == (2, 5)  # still usable


def test_good_models_match_reference(outdir):
    """The generator's NumPy reference against the runtime, from Python (the C test does
    the same without Python)."""
    for name, (layers, shape, _) in make_cases.good_models().items():
        x = np.fromfile(os.path.join(outdir, name + ".in.f32"), "<f4").reshape(3, *shape)
        want = np.fromfile(os.path.join(outdir, name + ".out.f32"), "<f4").reshape(3, -1)
        got = sparseinfer.load(os.path.join(outdir, name + ".npz")).predict(x)
        scale = np.abs(want).max(axis=1, keepdims=True)
        bad = np.abs(got - want) > 1e-4 * np.maximum(np.abs(want), 1e-3 * scale)
        assert not bad.any(), f"{name}: (sample, element) {np.argwhere(bad)[:5].tolist()} differ: {got[bad][:5]} vs {want[bad][:5]}"


def test_manifest_json_numbers(outdir, tmp_path):
    """The C parser takes every number form JSON allows and refuses what it does not (as
    Python's json does, which reads the same manifest)."""
    base = make_cases.read_members(os.path.join(outdir, "good_lenet.npz"))
    text = json.dumps(make_cases.get_manifest(base))
    ok = ['"mean": [-0.0, 1e-05]', '"mean": [2E+2, -1.5e3]', '"mean": [0, 0.25e-2]']
    bad = ['"mean": [01, 0]', '"mean": [1., 0]', '"mean": [.5, 0]', '"mean": [+1, 0]', '"mean": [1e, 0]',
           '"mean": [NaN, 0]', '"mean": [-, 0]', '"mean": [0x10, 0]', '"mean": [1.5.2, 0]', '"mean": [-01, 0]']
    for i, repl in enumerate(ok + bad):
        m = dict(base)
        new = text.replace('"mean": [0.0]', repl)  # the writer stores one mean for equal channels
        assert new != text
        m["model.json.npy"] = make_cases.manifest_bytes(new)
        path = make_cases.write_members(str(tmp_path / f"n{i}.npz"), m)
        if repl in ok:
            sparseinfer.load(path)
        else:
            msg = r"model.json: (bad number|unexpected character|expected ',' or '\]') at byte"
            with pytest.raises(sparseinfer.SparseInferError, match=msg):
                sparseinfer.load(path)


@pytest.mark.parametrize("exec_, sparse", [("auto", "auto"), ("dense", "auto"), ("sparse", "own"), ("sparse", "mkl")])
def test_pruned_empty_layers_load_and_run(outdir, exec_, sparse):
    """Layers that pruning emptied (CSR with no non-zeros: no value or column data in the
    file) load under every policy and give bias + activation (issue 13, item 1: the wide
    100 x 10000 one crashed the loader). Tolerance: 1e-6 relative to the largest output."""
    layers, shape, _ = make_cases.good_models()["good_pruned_empty"]
    m = sparseinfer.load(os.path.join(outdir, "good_pruned_empty.npz"), exec=exec_, sparse=sparse, plan="nomeasure")
    storage = {l["name"]: (l["storage"], l["nnz"]) for l in m.layers() if l["weight_shape"]}
    assert storage["wide"] == ("csr", 0) and storage["c1"] == ("csr", 0), storage
    x = np.random.default_rng(5).uniform(-1, 1, size=(3, *shape)).astype(np.float32)
    want = make_cases.reference_forward(layers, x)
    for batch in (1, 3):
        got = m.predict(x[:batch])
        err = np.abs(got - want[:batch]).max() / np.abs(want).max()
        assert err <= 1e-6, f"exec={exec_} sparse={sparse} batch {batch}: relative error {err:.3g}"


def _comma_locale() -> str | None:
    """A locale with a decimal comma this machine has, or None."""
    import locale
    saved = locale.setlocale(locale.LC_ALL)
    try:
        for name in ("de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "nl_NL.UTF-8", "ru_RU.UTF-8"):
            try:
                locale.setlocale(locale.LC_ALL, name)
            except locale.Error:
                continue
            if locale.localeconv()["decimal_point"] == ",":
                return name
        return None
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _built_comma_locale(where: str) -> str | None:
    """de_DE.UTF-8 compiled by localedef into `where` (glibc reads it there through LOCPATH),
    from the locale sources a Debian system carries in /usr/share/i18n even with no locale
    generated; None where localedef or the sources are missing."""
    import shutil
    if not shutil.which("localedef") or not os.path.isdir("/usr/share/i18n/locales"):
        return None
    r = subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", os.path.join(where, "de_DE.UTF-8")],
                       capture_output=True, text=True, timeout=120)
    probe = subprocess.run([sys.executable, "-c", "import locale; locale.setlocale(locale.LC_ALL, 'de_DE.UTF-8'); "
                            "print(locale.localeconv()['decimal_point'])"], capture_output=True, text=True,
                           env={**os.environ, "LOCPATH": where}, timeout=60)
    return "de_DE.UTF-8" if r.returncode == 0 and probe.stdout.strip() == "," else None


def test_load_under_decimal_comma_locale(outdir, tmp_path):
    """A host that calls setlocale(LC_ALL, "de_DE.UTF-8") still reads manifests, whose
    numbers ("mean": [0.5]) use JSON's decimal point (issue 13, item 3), and gets the same
    outputs bit for bit. In a subprocess, so the locale does not leak into other tests. Where
    no such locale is installed (a fresh Debian machine has only C and POSIX), the test
    compiles one into its temporary directory."""
    name, env = _comma_locale(), dict(os.environ)
    if name is None:
        name = _built_comma_locale(str(tmp_path))
        env["LOCPATH"] = str(tmp_path)
    if name is None:
        pytest.skip("no decimal-comma locale installed, and none could be compiled (localedef and "
                    "/usr/share/i18n/locales: Debian's libc-bin and locales)")
    path = os.path.join(outdir, "good_lenet.npz")
    code = ("import locale, sys, numpy as np, sparseinfer\n"
            f"locale.setlocale(locale.LC_ALL, {name!r})\n"
            "assert locale.localeconv()['decimal_point'] == ','\n"
            "m = sparseinfer.load(sys.argv[1], plan='nomeasure')\n"
            "x = np.linspace(-1, 1, 3 * 16 * 16 * 2, dtype=np.float32).reshape(3, 16, 16, 2)\n"
            "sys.stdout.write(m.predict(x).tobytes().hex())\n")
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, f"load under {name} failed:\n{r.stderr}"
    x = np.linspace(-1, 1, 3 * 16 * 16 * 2, dtype=np.float32).reshape(3, 16, 16, 2)
    want = sparseinfer.load(path, plan="nomeasure").predict(x)
    assert bytes.fromhex(r.stdout) == want.tobytes(), f"outputs under {name} differ from the C locale's"


_RSS_PROBE = """
import resource, sys
lim = 3 << 30  # address-space guard: a regression fails here instead of filling a shared machine
resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
import sparseinfer
try:
    sparseinfer.load(sys.argv[1], exec=sys.argv[2], cache="")
    print("loaded")
except sparseinfer.SparseInferError as e:
    print(e.status, "|", e)
# VmHWM, this process image's own peak: ru_maxrss survives exec on Linux, so it would report
# the parent's size at fork (1.2 GB when pytest had TensorFlow loaded)
print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


@pytest.mark.parametrize("rows, cols, exec_, needed", [
    # the file (4 MB; 2^20 - 1024 rows keep it within 4 MiB): fc_csrmv's column-blocked
    # row pointers, 8 bytes per row per 4096 columns (32 GB)
    (2 ** 20 - 1024, 2 ** 24, "sparse", 8 * (2 ** 20 - 1024) * 2 ** 24 // 4096),
    # 67 KB: its dense form (4 GB), which the planner would time. It was refused; now the
    # candidates that need it drop out and the layer loads with the CSR ones (needed 0)
    (2 ** 14, 2 ** 16, "auto", 0),
])
def test_small_file_cannot_drive_memory(tmp_path, rows, cols, exec_, needed):
    """A file of at most 4 MB whose empty CSR layer declares a huge shape is refused with the
    layer and the bytes named, or loads without the forms the memory limit refuses, and the
    process stays far below 1 GB (issue 13, item 4)."""
    path = make_cases.wide_empty_csr(str(tmp_path / "wide.npz"), rows=rows, cols=cols)
    assert os.path.getsize(path) <= 4 << 20
    r = subprocess.run([sys.executable, "-c", _RSS_PROBE, path, exec_], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    msg, peak = r.stdout.strip().rsplit("\n", 1)
    if needed == 0:
        assert msg == "loaded", msg
        assert int(peak) < 1 << 30, f"peak RSS {int(peak) >> 20} MB for a {os.path.getsize(path)}-byte file"
        return
    assert msg.startswith("out of memory |") and "layer wide" in msg, msg
    m = re.search(r"(\d+) more bytes would pass the load's memory limit of (\d+)", msg)
    assert m and int(m.group(1)) >= needed and int(m.group(2)) < 1 << 30, msg
    assert int(peak) < 1 << 30, f"peak RSS {int(peak) >> 20} MB for a {os.path.getsize(path)}-byte file"


def test_wide_empty_layer_loads_without_its_dense_form(tmp_path):
    """16384 x 65536 with no non-zeros (67 KB): the planner cannot time the dense entries (the
    dense form, 4 GB, passes the load's memory limit), so they drop out; the CSR entries run it:
    ReLU of a zero layer with a bias gives the bias's positive part."""
    path = make_cases.wide_empty_csr(str(tmp_path / "wide.npz"), rows=2 ** 14, cols=2 ** 16, bias=True)
    m = sparseinfer.load(path, cache="")
    info = m.layers()[0]
    assert info["exec_batch1"] == "sparse" and info["exec_batchn"] == "sparse", info["why"]
    assert info["memory_bytes"] < 64 << 20, info["memory_bytes"]
    np.testing.assert_array_equal(m.predict(np.ones((2, 1, 1, 2 ** 16), np.float32)), np.zeros((2, 2 ** 14), np.float32))


def test_max_memory_bytes_from_python():
    """sparseinfer.load(..., max_memory_bytes=N) bounds the load as si_load_options does: the
    dense LeNet-5 (1.7 MB of weights) cannot load in 100 KB, and the error names the limit;
    with room it loads and runs as with the default; bad values are refused before loading."""
    lenet = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "lenet5.npz")
    with pytest.raises(sparseinfer.SparseInferError, match=r"memory limit of 100000 "):
        sparseinfer.load(lenet, max_memory_bytes=100_000, plan="nomeasure", cache="")
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    a = sparseinfer.load(lenet, max_memory_bytes=1 << 30, plan="nomeasure", cache="").predict(x)
    np.testing.assert_array_equal(a, sparseinfer.load(lenet, plan="nomeasure", cache="").predict(x))
    for bad in (0, -1, 1.5, True, 2 ** 62, "1e9"):
        with pytest.raises((ValueError, TypeError), match="max_memory_bytes|int"):
            sparseinfer.load(lenet, max_memory_bytes=bad)
