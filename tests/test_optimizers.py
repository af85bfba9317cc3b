"""prune.optimizers: Keras' Adam and SGD without the one-replica all-reduce that keeps a traced
training step's variables resident (TensorFlow's custom-gradient registry holds the graph).

Run in a subprocess (its own TensorFlow, a clean resident-memory count): a 100 MB variable,
a new optimizer and a new traced step, 4 times; the process may not grow by more than
40 MB from the second iteration to the last (Keras' own Adam: about 300 MB an iteration
here, printed beside). The updates equal Keras' own bit for bit (3 steps of a small model,
Adam and SGD with momentum, under tf.function). Under several replicas the all-reduce stays:
tests/test_distribute.py trains with these optimizers on two logical CPUs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import gc, json, sys
import numpy as np, tensorflow as tf, keras
from prune import optimizers

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

def growth(make):
    seen = []
    for i in range(4):
        v = keras.Variable(np.zeros((25, 1000, 1000), np.float32))  # 100 MB
        opt = make()
        opt.build([v])
        @tf.function
        def step(x):
            with tf.GradientTape() as t:
                y = tf.reduce_sum(v * x)
            opt.apply_gradients([(t.gradient(y, v), v)])
        step(tf.constant(1.0))
        del step, v, opt
        gc.collect()
        seen.append(rss())
    return seen

def updates(make):
    keras.utils.set_random_seed(3)
    m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    opt = make()
    x = tf.constant(np.random.default_rng(4).standard_normal((8, 6)), tf.float32)
    y = tf.constant(np.random.default_rng(5).standard_normal((8, 3)), tf.float32)
    @tf.function
    def step():
        with tf.GradientTape() as t:
            loss = tf.reduce_mean((m(x) - y) ** 2)
        opt.apply_gradients(zip(t.gradient(loss, m.trainable_variables), m.trainable_variables))
    for _ in range(3):
        step()
    return [w.tolist() for w in m.get_weights()]

out = {"ours": growth(lambda: optimizers.adam(1e-3)), "keras": growth(lambda: keras.optimizers.Adam(1e-3)),
       "same_adam": updates(lambda: optimizers.adam(1e-2)) == updates(lambda: keras.optimizers.Adam(1e-2)),
       "same_sgd": updates(lambda: optimizers.sgd(1e-2, momentum=0.9))
                   == updates(lambda: keras.optimizers.SGD(1e-2, momentum=0.9))}
print("RESULT " + json.dumps(out))
"""


def test_no_growth_per_traced_step_and_the_same_updates():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))[7:])
    ours, theirs = r["ours"], r["keras"]
    grew = ours[-1] - ours[0]
    assert grew < 40, (f"prune.optimizers.adam: resident memory grew {grew:.0f} MB over 3 new 100 MB variables "
                       f"and traced steps (MB after each: {[round(v) for v in ours]}; keras.optimizers.Adam: "
                       f"{[round(v) for v in theirs]})")
    assert r["same_adam"], "prune.optimizers.adam's updates differ from keras.optimizers.Adam's"
    assert r["same_sgd"], "prune.optimizers.sgd's updates differ from keras.optimizers.SGD's"
