"""One pruning stage of a full-size VGG19 on a tiny image folder made from the shipped
photos: the fully connected group, one threshold step, one fine-tuning pass at batch 2 with
the conv layers frozen; the run's process dies after the step's checkpoint, a new one
resumes it, and the exported file runs in the C runtime as TensorFlow runs it.

About 1.5 minutes and 6 GB peak memory on 2 cores (the weights are 575 MB; the pruner
holds the model, the step's copy of the weights, the original kernels, Adam's state for the
group and a checkpoint; docs/vgg19.md)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.full_size  # 6-8 GB peak: `python -m pytest -m full_size`

pytest.importorskip("tensorflow")
pytest.importorskip("skimage")
pytest.importorskip("cv2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from prune.sample_data import make_photo_folder, make_vgg19_file
    d = tmp_path_factory.mktemp("vgg19_stage")
    make_photo_folder(d / "photos", per_class=5, seed=1)
    make_vgg19_file(d / "vgg19.npz", seed=2)
    return d


def test_stage_interrupted_resumed_exported(sample):
    import sparseinfer
    from prune.keras_io import keras_from_model_file, load_weights
    from prune.pruner import PruneConfig, prune

    q = 1.0
    cfg = PruneConfig(str(sample / "vgg19.npz"), str(sample / "stage.npz"), {
        "groups": [{"name": "fc", "layers": ["fc1", "fc2"], "q": {"values": [q]}, "tolerance": 1.0,
                    "epochs": 1, "max_epochs": 1, "learning_rate": 1e-5, "freeze_others": True}],
        "final_epochs": 0},
        dataset={"name": "imagefolder", "root": str(sample / "photos"), "sizes": [3, 1, 1], "eval_batch": 4},
        batch_size=2, plots=False)

    # the first run dies after the step's checkpoint: a process of its own, ended by os._exit
    # (TensorFlow keeps some of a trained model's memory until its process ends: the two runs
    # in one process peaked at 9.8 GB)
    child = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        from prune.pruner import PruneConfig, prune
        cfg = PruneConfig.from_config({cfg.to_config()!r})
        prune(cfg, on_step_end=lambda state: os._exit(17), verbose=False)
        """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=900)
    assert done.returncode == 17, f"the first run ended with {done.returncode}, not at its step:\n{done.stderr[-3000:]}"
    assert os.path.exists(cfg.checkpoint) and not os.path.exists(cfg.out), "no model before the run ends"
    r = prune(cfg, verbose=False)
    assert r["resumed"] == 1
    assert [h["accepted"] for h in r["history"]] == [True] and r["q"]["fc1"] == q

    _, w_in = load_weights(cfg.model)
    manifest, w_out = load_weights(cfg.out)
    # the frozen conv layers are bit-identical; the group is pruned at |w| < q * sigma of the
    # original weights and the pruned weights stay exactly zero through fine-tuning
    for name in w_in:
        if name.startswith("block"):
            np.testing.assert_array_equal(w_out[name][0], w_in[name][0], err_msg=name)
    for name in ("fc1", "fc2"):
        orig, new = w_in[name][0], w_out[name][0]
        below = np.abs(orig) < q * r["sigma"][name]
        assert (new[below] == 0).all(), f"{name}: a weight below the threshold is not zero"
        assert 0.25 < 1 - below.mean() < 0.40, f"{name}: density {1 - below.mean():.3f}"  # 2 Phi(-1) = 32%
        kept = ~below
        assert not np.array_equal(new[kept], orig[kept]), f"{name}: fine-tuning did not change the kept weights"
    np.testing.assert_array_equal(w_out["predictions"][0], w_in["predictions"][0])  # not in the group: frozen

    # the file runs in the C runtime as in TensorFlow, on the folder's own images
    ev = r["evaluation"]
    assert ev["tf_val"] == ev["runtime_val"] and ev["tf_test"] == ev["runtime_test"], ev
    from prune.imagefolder import load_images, make_dataset
    rt = sparseinfer.load(cfg.out)
    x, _ = next(make_dataset(load_images(sample / "photos"), rt.input_spec, batch_size=4).as_numpy_iterator())
    want = np.asarray(keras_from_model_file(cfg.out)(x, training=False), np.float64)
    got = rt.predict(x).astype(np.float64)
    err = np.abs(got - want) / (np.abs(want).max(axis=1, keepdims=True))
    i = np.unravel_index(int(err.argmax()), err.shape)
    assert err.max() < 1e-4, f"runtime vs TF: relative error {err.max():.2e} at image {i[0]}, class {i[1]}"


def test_default_vgg19_grouping_covers_every_layer_once():
    """prune/configs/vgg19.json: every VGG19 conv and dense layer in exactly one group, the
    groups ordered largest first, and the configuration round-trips."""
    from prune.pruner import PruneConfig
    from prune.vgg_import import VGG19_LAYERS
    cfg = PruneConfig.from_file(os.path.join(ROOT, "prune", "configs", "vgg19.json"))
    weights = {name: int(np.prod(shape)) for name, _, shape in VGG19_LAYERS}
    grouped = [n for g in cfg.schedule.groups for n in g.layers]
    assert sorted(grouped) == sorted(weights) and len(grouped) == len(set(grouped))
    sizes = [sum(weights[n] for n in g.layers) / len(g.layers) for g in cfg.schedule.groups]
    assert sizes == sorted(sizes, reverse=True), sizes
    assert all(g.freeze_others for g in cfg.schedule.groups)
    assert PruneConfig.from_config(cfg.to_config()).fingerprint() == cfg.fingerprint()


def test_bad_image_stops_the_run_before_training(tmp_path):
    """A file with an image extension that does not decode, in a folder the run would use:
    the run stops before any training with an error naming the file; no model file and no
    checkpoint are written."""
    import keras
    from prune.imagefolder import ImageError
    from prune.models import vgg19
    from prune.pruner import PruneConfig, prune
    from prune.sample_data import make_photo_folder
    from sparseinfer.export import default_input_spec, export_keras
    make_photo_folder(tmp_path / "photos", per_class=4, seed=5)
    bad = tmp_path / "photos" / "n07920052" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    keras.utils.set_random_seed(6)
    export_keras(vgg19(width=1 / 16, fc_units=16), tmp_path / "small.npz", input_spec=default_input_spec((224, 224, 3)))
    cfg = PruneConfig(str(tmp_path / "small.npz"), str(tmp_path / "out.npz"),
                      {"groups": [{"layers": ["fc1"], "q": {"values": [0.5]}, "tolerance": 1.0}]},
                      dataset={"name": "imagefolder", "root": str(tmp_path / "photos"), "sizes": [None, 1, 1]},
                      batch_size=2, plots=False)
    with pytest.raises(ImageError, match="broken.jpg"):
        prune(cfg, verbose=False)
    assert not os.path.exists(cfg.out) and not os.path.exists(cfg.checkpoint)


def test_folder_run_resumed_equals_uninterrupted(tmp_path):
    """On an image folder (random crops and flips from tf.data), a run interrupted after its
    first step and resumed ends with the same weights, bit for bit, as one that was not."""
    import keras
    from prune.keras_io import load_weights
    from prune.models import vgg19
    from prune.pruner import PruneConfig, StepInterrupt, prune
    from prune.sample_data import make_photo_folder
    from sparseinfer.export import default_input_spec, export_keras
    make_photo_folder(tmp_path / "photos", per_class=4, seed=7)
    keras.utils.set_random_seed(8)
    export_keras(vgg19(width=1 / 16, fc_units=16), tmp_path / "small.npz", input_spec=default_input_spec((224, 224, 3)))
    groups = [{"layers": ["fc1", "fc2"], "q": {"values": [0.5]}, "tolerance": 1.0, "epochs": 1, "max_epochs": 1},
              {"layers": ["block5_conv4"], "q": {"values": [0.3]}, "tolerance": 1.0, "epochs": 1, "max_epochs": 1}]

    def cfg(name):
        return PruneConfig(str(tmp_path / "small.npz"), str(tmp_path / f"{name}.npz"),
                           {"groups": groups, "final_epochs": 1},
                           dataset={"name": "imagefolder", "root": str(tmp_path / "photos"), "sizes": [2, 1, 1]},
                           batch_size=2, plots=False, deterministic=True)

    a = prune(cfg("a"), verbose=False)

    def crash(state):
        if state["step_counter"] == 1:
            raise StepInterrupt("after step 1")

    with pytest.raises(StepInterrupt):
        prune(cfg("b"), verbose=False, on_step_end=crash)
    b = prune(cfg("b"), verbose=False)
    assert b["resumed"] == 1 and len(a["history"]) == len(b["history"]) == 2
    _, wa = load_weights(a["output_model"])
    _, wb = load_weights(b["output_model"])
    for n in wa:
        np.testing.assert_array_equal(wa[n][0], wb[n][0], err_msg=n)
