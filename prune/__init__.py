"""prune: train and prune Keras CNNs, then export them as sparseinfer model files.

Needs TensorFlow (``pip install sparseinfer[prune]``). Modules:

* ``prune.models``: LeNet-5 (Caffe / Han et al. 2015) and VGG19 topologies;
* ``prune.keras_io``: rebuild a Keras model from a sparseinfer model file;
* ``prune.train``: ``python -m prune.train`` trains LeNet-5 on MNIST.
"""
