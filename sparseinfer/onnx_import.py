"""Import an ONNX model (a single chain of CNN operators) as a sparseinfer model file.

    sparseinfer import model.onnx --out model.npz

Needs only the ``onnx`` package (``pip install 'sparseinfer[onnx]'``), imported lazily;
never TensorFlow. The supported subset and the NCHW -> NHWC conversion are described in
docs/onnx.md. In short:

* Conv (dilation 1, group 1; pads none, or TensorFlow's "same"), MaxPool (the same pads,
  ceil_mode 0), Gemm, MatMul (+ Add as its bias), Flatten, Reshape (to 2-D, or a 4-D
  reshape that only moves size-1 axes), Transpose (batch axis fixed), Relu, Softmax (last
  axis of a 2-D tensor), Identity and Dropout (inference: identity). Shape arithmetic on
  constants (Shape, Gather, Slice, Concat, Cast, Unsqueeze, Squeeze, Constant), as exporters
  emit for a flatten, is evaluated at import.
* The runtime holds every activation as NHWC. Each 4-D tensor of the graph is tracked as
  "which of its ONNX axes are the runtime's H, W and C", so Transposes cost nothing, conv
  kernels go from OIHW to the file's (filters, kh*kw*cin) rows, and the first fully
  connected layer after a flatten gets its input columns permuted from the graph's
  flatten order (C, H, W for NCHW) to the runtime's (H, W, C).
* Weights go through sparseinfer.format.write_model, which stores each one as CSR where
  that takes fewer bytes (storage="auto").

Anything else raises OnnxImportError naming the node (name and op_type) and what is not
supported; nothing is written then.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .export import default_input_spec
from .format import conv_kernel_to_matrix, write_model

__all__ = ["OnnxImportError", "import_onnx", "main"]

#: The batch size in folded shape values (Shape of a tensor whose batch is symbolic). It
#: fits int32, because tf2onnx casts shapes to int32 and back.
_BATCH = -2_147_480_000
#: The runtime's (H, W, C) as axes of an NCHW tensor.
_NCHW = (2, 3, 1)
_DEFAULT_DOMAINS = ("", "ai.onnx")
_SUPPORTED = ("Conv, MaxPool, Gemm, MatMul, Add (as a bias), Flatten, Reshape, Transpose, Relu, "
              "Softmax, Identity, Dropout; on constants Shape, Gather, Slice, Concat, Cast, "
              "Unsqueeze, Squeeze, Constant")


class OnnxImportError(ValueError):
    """An ONNX file that cannot be imported; the message names the file, the node and what
    is not supported."""


@dataclasses.dataclass
class _Tensor:
    """A tensor on the graph's data path, as the runtime will hold it."""
    shape: tuple  # ONNX shape; shape[0] is the batch (None when symbolic)
    axes: tuple[int, int, int] | None = None  # 4-D: the ONNX axes holding the runtime's H, W, C
    order: np.ndarray | None = None  # 2-D: runtime column i is ONNX column order[i]; None: same
    producer: int | None = None  # the conv/dense layer whose linear output this is (up to layout)
    direct: bool = False  # exactly that layer's output (an Add may fold into its bias)


class _LayoutFound(Exception):
    """Internal: the first Conv/MaxPool fixed which input axes are H, W and C."""

    def __init__(self, axes: tuple[int, int, int]) -> None:
        super().__init__(axes)
        self.axes = axes


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise OnnxImportError("importing ONNX needs the onnx package: pip install 'sparseinfer[onnx]' "
                              f"({e})") from e
    return onnx


def _same_pads(n: int, k: int, s: int) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of TensorFlow's "same" along one axis, the rule
    the runtime's loader applies (docs/format.md: extra pad at the bottom/right)."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def _flat_order(t: _Tensor) -> np.ndarray | None:
    """For a 4-D tensor: the ONNX flat index (C, H, W order for NCHW) of each element in
    the runtime's flatten order (H, W, C); None when the two agree."""
    dims = [int(d) for d in t.shape[1:]]
    idx = np.arange(int(np.prod(dims)), dtype=np.int64).reshape(dims)
    order = idx.transpose([a - 1 for a in t.axes]).ravel()
    return None if np.array_equal(order, np.arange(order.size)) else order


class _Converter:
    def __init__(self, path: str, model: Any, input_axes: tuple[int, int, int], probe: bool) -> None:
        onnx = _onnx()
        self.onnx = onnx
        self.path = path
        self.graph = model.graph
        self.input_axes = input_axes
        self.probe = probe
        self.opset = 0
        for o in model.opset_import:
            if o.domain in _DEFAULT_DOMAINS:
                self.opset = int(o.version)
        if not self.opset:
            raise OnnxImportError(f"{path}: no opset of the default ONNX domain")
        self.inits = {t.name: t for t in self.graph.initializer}
        self.consts: dict[str, np.ndarray] = {}
        self.tensors: dict[str, _Tensor] = {}
        self.layers: list[dict[str, Any]] = []
        self.names: set[str] = set()
        self.current = ""
        self.node: Any = None
        self.index = 0
        self.consumers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for out in self.graph.output:
            self.consumers[out.name] = self.consumers.get(out.name, 0) + 1

    # --- errors and lookups -----------------------------------------------------------

    def where(self) -> str:
        n = self.node
        label = repr(n.name) if n.name else f"#{self.index} (output {n.output[0]!r})" if n.output else f"#{self.index}"
        return f"{self.path}: node {label} ({n.op_type})"

    def fail(self, what: str) -> None:
        raise OnnxImportError(f"{self.where()}: {what}")

    def const(self, name: str) -> np.ndarray | None:
        if name in self.consts:
            return self.consts[name]
        t = self.inits.get(name)
        if t is None:
            return None
        try:
            v = self.onnx.numpy_helper.to_array(t, base_dir=os.path.dirname(os.path.abspath(self.path)))
        except (ValueError, TypeError, OSError) as e:
            raise OnnxImportError(f"{self.path}: initializer {name!r} cannot be read: {e}") from e
        self.consts[name] = v
        return v

    def weight(self, i: int, what: str, optional: bool = False) -> np.ndarray | None:
        node = self.node
        if i >= len(node.input) or not node.input[i]:
            if optional:
                return None
            self.fail(f"has no {what} input")
        v = self.const(node.input[i])
        if v is None:
            self.fail(f"{what} {node.input[i]!r} is not a constant (an initializer or Constant): "
                      "only fixed weights are supported")
        if not np.issubdtype(v.dtype, np.floating):
            self.fail(f"{what} {node.input[i]!r} has dtype {v.dtype}, expected floating point")
        with np.errstate(over="ignore"):
            w = np.asarray(v, dtype=np.float32)
        if not np.isfinite(w).all():
            self.fail(f"{what} {node.input[i]!r} has non-finite values (in float32)")
        return w

    def data(self) -> _Tensor:
        """The node's data input, which must be the output of the node before it."""
        node = self.node
        name = node.input[0] if node.input else ""
        if name == self.current:
            return self.tensors[name]
        if name in self.tensors:
            self.fail(f"reads {name!r}, an earlier tensor of the data path, not {self.current!r}: only "
                      "graphs that are a single chain are supported (no branches or skip connections)")
        if self.const(name) is not None:
            self.fail(f"its data input {name!r} is a constant")
        self.fail(f"reads {name!r}, which no earlier node produces")
        raise AssertionError  # unreachable

    def attrs(self, allowed: Iterable[str]) -> dict[str, Any]:
        allowed = set(allowed)
        out = {}
        for a in self.node.attribute:
            if a.name not in allowed:
                self.fail(f"attribute {a.name!r} is not supported (supported: {', '.join(sorted(allowed)) or 'none'})")
            out[a.name] = self.onnx.helper.get_attribute_value(a)
        return out

    def put(self, t: _Tensor, i: int = 0) -> None:
        name = self.node.output[i]
        self.tensors[name] = t
        self.current = name

    def layer_name(self) -> str:
        n = self.node
        base = re.sub(r"[^A-Za-z0-9_.\-]", "_", n.name or (n.output[0] if n.output else "") or
                      f"{n.op_type.lower()}{self.index}")[:63] or f"layer{self.index}"
        name, k = base, 2
        while name in self.names:
            suffix = f"_{k}"
            name, k = base[:63 - len(suffix)] + suffix, k + 1
        self.names.add(name)
        return name

    def emit(self, layer: dict[str, Any]) -> int:
        self.layers.append({"name": self.layer_name(), **layer})
        return len(self.layers) - 1

    def unused_extra_outputs(self, what: str) -> None:
        for name in self.node.output[1:]:
            if name and self.consumers.get(name):
                self.fail(f"its output {name!r} ({what}) is used: not supported")

    # --- the walk ---------------------------------------------------------------------

    def run(self) -> tuple[list[dict[str, Any]], list[int]]:
        graph = self.graph
        inputs = [i for i in graph.input if i.name not in self.inits]
        if len(inputs) != 1:
            raise OnnxImportError(f"{self.path}: the graph has {len(inputs)} inputs "
                                  f"({', '.join(i.name for i in inputs)}); exactly one is supported")
        inp = inputs[0]
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type") or tt.elem_type != self.onnx.TensorProto.FLOAT:
            raise OnnxImportError(f"{self.path}: input {inp.name!r} is not a float32 tensor")
        dims = []
        for j, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif j == 0:
                dims.append(None)
            else:
                raise OnnxImportError(f"{self.path}: input {inp.name!r}: dimension {j} is not a fixed size; "
                                      "only the batch (dimension 0) may vary")
        if len(dims) == 4:
            self.tensors[inp.name] = _Tensor(tuple(dims), axes=self.input_axes)
            spec_shape = [dims[a] for a in self.input_axes]
        elif len(dims) == 2:
            self.tensors[inp.name] = _Tensor(tuple(dims))
            spec_shape = [1, 1, dims[1]]
        else:
            raise OnnxImportError(f"{self.path}: input {inp.name!r} has shape {dims}; expected 4-D "
                                  "(N, C, H, W or N, H, W, C) or 2-D (N, features)")
        self.current = inp.name

        for self.index, self.node in enumerate(graph.node):
            node = self.node
            if node.domain not in _DEFAULT_DOMAINS:
                self.fail(f"operator domain {node.domain!r} is not supported (only the default ONNX domain)")
            op = node.op_type
            if op in _FOLD and all(not n or self.const(n) is not None or (op == "Shape" and n in self.tensors)
                                   for n in node.input):
                self.fold()
                continue
            handler = _HANDLERS.get(op)
            if handler is None:
                if op in _FOLD:
                    self.fail(f"{op} on the data path (input {node.input[0]!r} is not a constant) is not supported")
                self.fail(f"operator {op} is not supported; supported: {_SUPPORTED}")
            handler(self)

        if len(graph.output) != 1:
            raise OnnxImportError(f"{self.path}: the graph has {len(graph.output)} outputs; exactly one is supported")
        out = graph.output[0].name
        if out != self.current:
            raise OnnxImportError(f"{self.path}: output {out!r} is not the end of the data path "
                                  f"({self.current!r}): only single-chain graphs are supported")
        t = self.tensors[out]
        order = _flat_order(t) if t.axes is not None else t.order
        if order is not None:
            raise OnnxImportError(
                f"{self.path}: output {out!r} of shape {list(t.shape)} would come out of the runtime in "
                "its own (H, W, C) order, not the graph's; end the graph with a fully connected layer")
        if not any(L["type"] in ("conv2d", "dense") for L in self.layers):
            raise OnnxImportError(f"{self.path}: the graph has no Conv, Gemm or MatMul: nothing to import")
        return self.layers, spec_shape

    # --- constants --------------------------------------------------------------------

    def fold(self) -> None:
        node, op = self.node, self.node.op_type
        ins = [self.const(n) if n and n not in self.tensors else None for n in node.input]
        if op == "Constant":
            a = self.attrs(("value", "value_float", "value_floats", "value_int", "value_ints"))
            if len(a) != 1:
                self.fail(f"expected exactly one supported value attribute, got {sorted(a)}")
            (key, v), = a.items()
            if key == "value":
                v = self.onnx.numpy_helper.to_array(v)
            else:
                v = np.asarray(v, np.float32 if "float" in key else np.int64)
        elif op == "Shape":
            a = self.attrs(("start", "end"))
            src = self.tensors.get(node.input[0])
            shape = src.shape if src is not None else ins[0].shape
            v = np.array([_BATCH if d is None else d for d in shape], np.int64)
            v = v[a.get("start", 0):a.get("end")]
        elif op == "Identity":
            self.attrs(())
            v = ins[0]
        elif op == "Cast":
            to = self.attrs(("to", "saturate"))["to"]
            v = ins[0].astype(self.onnx.helper.tensor_dtype_to_np_dtype(to))
        elif op == "Gather":
            v = np.take(ins[0], ins[1].astype(np.int64), axis=self.attrs(("axis",)).get("axis", 0))
        elif op == "Concat":
            v = np.concatenate([np.atleast_1d(x) for x in ins], axis=self.attrs(("axis",))["axis"])
        elif op == "Slice":
            if self.opset < 10:
                a = self.attrs(("starts", "ends", "axes"))
                starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
            else:
                self.attrs(())
                starts, ends = ins[1], ins[2]
                axes = ins[3] if len(ins) > 3 and ins[3] is not None else None
                steps = ins[4] if len(ins) > 4 and ins[4] is not None else None
            x = ins[0]
            axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in axes]
            sl = [slice(None)] * x.ndim
            for j, ax in enumerate(axes):
                sl[ax] = slice(int(starts[j]), int(ends[j]), 1 if steps is None else int(steps[j]))
            v = x[tuple(sl)]
        elif op in ("Unsqueeze", "Squeeze"):
            if self.opset < 13:
                axes = self.attrs(("axes",)).get("axes")
            else:
                self.attrs(())
                axes = ins[1] if len(ins) > 1 and ins[1] is not None else None
            x = ins[0]
            if op == "Unsqueeze":
                rank = x.ndim + len(axes)
                v = x.reshape(_unsqueeze_shape(x.shape, [int(a) % rank for a in axes]))
            else:
                v = np.squeeze(x, axis=None if axes is None else tuple(int(a) % x.ndim for a in axes))
        elif op == "Transpose":
            perm = self.attrs(("perm",)).get("perm")
            v = np.transpose(ins[0], perm)
        elif op == "Reshape":
            allowzero = self.attrs(("allowzero",)).get("allowzero", 0)
            tgt = [int(d) for d in ins[1]]
            if not allowzero:
                tgt = [ins[0].shape[j] if d == 0 else d for j, d in enumerate(tgt)]
            v = ins[0].reshape(tgt)
        else:  # pragma: no cover - _FOLD and this function list the same ops
            raise AssertionError(op)
        self.consts[node.output[0]] = np.asarray(v)

    # --- data path operators -----------------------------------------------------------

    def check_nchw(self, t: _Tensor) -> None:
        """Conv and MaxPool read NCHW: the runtime's H, W, C must be ONNX axes 2, 3, 1."""
        if len(t.shape) != 4:
            self.fail(f"input of shape {list(t.shape)}: a 4-D NCHW tensor is required")
        if t.axes == _NCHW:
            return
        if self.probe and not any(L["type"] in ("conv2d", "maxpool2d") for L in self.layers):
            # First spatial operator: which graph input axes it sees as H, W and C decides
            # the runtime's input layout. Input axis k+1 sits at this tensor's axis axes[k].
            raise _LayoutFound(tuple(1 + t.axes.index(a) for a in _NCHW))
        self.fail(f"its input is not NCHW for the runtime (the graph transposes it to another layout "
                  f"after the input layout was fixed; H, W, C at ONNX axes {t.axes})")

    def padding(self, a: Mapping[str, Any], hw: Sequence[int], k: Sequence[int], s: Sequence[int],
                ceil_mode: int = 0) -> tuple[str, list[int]]:
        """'valid' or 'same' for the node's auto_pad / pads, and the output size; else fail."""
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        same = [_same_pads(n, kk, ss) for n, kk, ss in zip(hw, k, s)]
        valid_out = [(n - kk) // ss + 1 for n, kk, ss in zip(hw, k, s)]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if "pads" in a:
                self.fail(f"auto_pad {auto} together with pads is not valid ONNX")
            if auto == "SAME_LOWER" and any(pb != pa for _, pb, pa in same):
                self.fail(f"auto_pad SAME_LOWER with uneven padding {[(pb, pa) for _, pb, pa in same]} is not "
                          "supported: the runtime puts the extra pad at the bottom/right (SAME_UPPER)")
            return "same", [o for o, _, _ in same]
        if auto == "VALID":
            if any(v < 1 for v in valid_out):
                self.fail(f"window {list(k)} larger than its input {list(hw)}")
            return "valid", valid_out
        if auto != "NOTSET":
            self.fail(f"auto_pad {auto!r} is not supported")
        pads = [int(p) for p in a.get("pads", [0] * 4)]
        if len(pads) != 4:
            self.fail(f"pads {pads}: expected 4 values (2-D)")
        begin, end = pads[:2], pads[2:]
        if pads == [0, 0, 0, 0]:
            mode, out = "valid", valid_out
        elif begin == [pb for _, pb, _ in same] and end == [pa for _, _, pa in same]:
            mode, out = "same", [o for o, _, _ in same]
        else:
            want = [same[0][1], same[1][1], same[0][2], same[1][2]]
            self.fail(f"pads {pads} cannot be expressed: the runtime pads either nothing or as TensorFlow's "
                      f"'same' (here pads {want}) for input {list(hw)}, kernel {list(k)}, strides {list(s)}")
        if ceil_mode:
            ceil_out = [-(-(n + b + e - kk) // ss) + 1 for n, b, e, kk, ss in zip(hw, begin, end, k, s)]
            if ceil_out != out:
                self.fail(f"ceil_mode 1 gives output {ceil_out}, not the {out} the runtime computes; "
                          "only ceil_mode 0 (or 1 where it changes nothing) is supported")
        if any(o < 1 for o in out):
            self.fail(f"window {list(k)} larger than its input {list(hw)}")
        return mode, out

    def op_conv(self) -> None:
        t = self.data()
        a = self.attrs(("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
        w = self.weight(1, "weight")
        b = self.weight(2, "bias", optional=True)
        if w.ndim != 4:
            self.fail(f"weight of shape {list(w.shape)}: only 2-D convolutions (OIHW weights) are supported")
        if int(a.get("group", 1)) != 1:
            self.fail(f"group {a['group']} is not supported (only group 1)")
        if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
            self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)")
        self.check_nchw(t)
        f, cin, kh, kw = w.shape
        if "kernel_shape" in a and list(a["kernel_shape"]) != [kh, kw]:
            self.fail(f"kernel_shape {list(a['kernel_shape'])} does not match the weight's {[kh, kw]}")
        if cin != t.shape[1]:
            self.fail(f"weight has {cin} input channels, the input {t.shape[1]}")
        if b is not None and b.shape != (f,):
            self.fail(f"bias of shape {list(b.shape)}, expected [{f}]")
        strides = [int(s) for s in a.get("strides", [1, 1])]
        padding, (oh, ow) = self.padding(a, t.shape[2:], (kh, kw), strides)
        # OIHW -> HWIO, then the file's rows (filters, kh*kw*cin) by the one helper
        i = self.emit({"type": "conv2d", "kernel": [kh, kw], "strides": strides, "padding": padding,
                       "activation": "linear", "W": conv_kernel_to_matrix(w.transpose(2, 3, 1, 0)), "b": b})
        self.put(_Tensor((t.shape[0], f, oh, ow), axes=_NCHW, producer=i, direct=True))

    def op_maxpool(self) -> None:
        t = self.data()
        a = self.attrs(("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"))
        self.unused_extra_outputs("the indices")
        self.check_nchw(t)
        k = [int(x) for x in a.get("kernel_shape", [])]
        if len(k) != 2:
            self.fail(f"kernel_shape {k}: only 2-D pooling is supported")
        if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
            self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)")
        strides = [int(s) for s in a.get("strides", [1, 1])]
        padding, (oh, ow) = self.padding(a, t.shape[2:], k, strides, int(a.get("ceil_mode", 0)))
        self.emit({"type": "maxpool2d", "pool": k, "strides": strides, "padding": padding})
        self.put(_Tensor((t.shape[0], t.shape[1], oh, ow), axes=_NCHW))

    def flatten(self, t: _Tensor) -> _Tensor:
        if len(t.shape) == 2:
            return dataclasses.replace(t, direct=False)
        self.emit({"type": "flatten"})
        return _Tensor((t.shape[0], int(np.prod(t.shape[1:]))), order=_flat_order(t), producer=t.producer)

    def op_flatten(self) -> None:
        t = self.data()
        axis = int(self.attrs(("axis",)).get("axis", 1))
        if axis % len(t.shape) != 1 or axis >= len(t.shape):
            self.fail(f"axis {axis} is not supported (only 1: keep the batch, flatten the rest)")
        self.put(self.flatten(t))

    def op_reshape(self) -> None:
        t = self.data()
        allowzero = int(self.attrs(("allowzero",)).get("allowzero", 0))
        if len(self.node.input) < 2 or self.const(self.node.input[1]) is None:
            self.fail("the target shape is not a constant (or computed from constants and shapes)")
        tgt = [int(d) for d in self.const(self.node.input[1]).ravel()]
        if allowzero and 0 in tgt:
            self.fail(f"target shape {tgt} with allowzero 1 would make an empty tensor")
        size = int(np.prod(t.shape[1:]))
        shape: list[Any] = []
        for j, d in enumerate(tgt):
            if d == _BATCH or (d == 0 and j == 0) or (j == 0 and d == t.shape[0] and d is not None):
                if j != 0:
                    self.fail(f"target shape {tgt} moves the batch size away from dimension 0")
                shape.append(None)
            elif d == 0:
                if j >= len(t.shape):
                    self.fail(f"target shape {tgt}: 0 at dimension {j} copies a dimension the input lacks")
                shape.append(t.shape[j])
            else:
                shape.append(d)
        if shape[0] == -1:  # the batch, if the rest accounts for every per-sample element
            if any(d is None or d < 0 for d in shape[1:]) or int(np.prod(shape[1:])) != size:
                self.fail(f"target shape {tgt} does not keep the batch in dimension 0 "
                          f"(input shape {list(t.shape)})")
            shape[0] = None
        if shape[0] is not None:
            self.fail(f"target shape {tgt} fixes the batch size at {shape[0]}, the input's is "
                      f"{t.shape[0] if t.shape[0] is not None else 'variable'}")
        rest = shape[1:]
        if rest.count(-1) > 1 or any(d is not None and d < -1 for d in rest):
            self.fail(f"target shape {tgt} is not valid")
        if -1 in rest:
            known = int(np.prod([d for d in rest if d != -1]))
            if known == 0 or size % known:
                self.fail(f"target shape {tgt} does not fit {size} elements per sample")
            rest[rest.index(-1)] = size // known
        if int(np.prod(rest)) != size:
            self.fail(f"target shape {tgt} does not fit {size} elements per sample")
        out = (t.shape[0], *[int(d) for d in rest])
        if len(out) == 2:
            self.put(self.flatten(t))
            return
        if len(out) == 4 and len(t.shape) == 4:
            axes = _relabel(t.shape[1:], out[1:], t.axes)
            if axes is not None:
                self.put(_Tensor(out, axes=axes, producer=t.producer))
                return
        self.fail(f"reshape from {list(t.shape)} to {list(out)} is not supported: only to 2-D (a flatten) "
                  "or a 4-D reshape that only moves size-1 axes")

    def op_transpose(self) -> None:
        t = self.data()
        perm = self.attrs(("perm",)).get("perm")
        if perm is None:
            self.fail("no perm (reversing all axes moves the batch axis): not supported")
        perm = [int(p) for p in perm]
        if sorted(perm) != list(range(len(t.shape))) or perm[0] != 0:
            self.fail(f"perm {perm} on a {len(t.shape)}-D tensor: only permutations that keep the batch axis "
                      "first are supported")
        if len(t.shape) == 2:
            self.put(dataclasses.replace(t, direct=False))
            return
        shape = tuple(t.shape[p] for p in perm)
        self.put(_Tensor(shape, axes=tuple(perm.index(a) for a in t.axes), producer=t.producer))

    def op_identity(self) -> None:
        t = self.data()
        if self.node.op_type == "Dropout":
            self.attrs(("ratio", "seed", "is_test"))
            self.unused_extra_outputs("the mask")
            if len(self.node.input) > 2 and self.node.input[2]:
                mode = self.const(self.node.input[2])
                if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                    self.fail("training_mode is not constant false: only inference (no dropout) is supported")
        else:
            self.attrs(())
        self.put(t)

    def op_relu(self) -> None:
        t = self.data()
        self.attrs(())
        if t.producer is not None and self.layers[t.producer]["activation"] == "linear":
            self.layers[t.producer]["activation"] = "relu"  # relu commutes with layout changes
        else:
            self.emit({"type": "relu"})
        self.put(dataclasses.replace(t, producer=None, direct=False))

    def op_softmax(self) -> None:
        t = self.data()
        axis = int(self.attrs(("axis",)).get("axis", 1 if self.opset < 13 else -1))
        if len(t.shape) != 2 or axis not in (1, -1):
            self.fail(f"softmax over axis {axis} of a {len(t.shape)}-D tensor: only the last axis of a 2-D "
                      "tensor (N, classes) is supported")
        p = t.producer
        if p is not None and self.layers[p]["type"] == "dense" and self.layers[p]["activation"] == "linear":
            self.layers[p]["activation"] = "softmax"
        else:
            self.emit({"type": "softmax"})
        self.put(dataclasses.replace(t, producer=None, direct=False))

    def dense(self, t: _Tensor, k_by_n: np.ndarray, b: np.ndarray | None) -> None:
        if len(t.shape) != 2:
            self.fail(f"input of shape {list(t.shape)}: a 2-D (N, features) input is required (Flatten first)")
        if k_by_n.shape[0] != t.shape[1]:
            self.fail(f"weight of shape {list(k_by_n.shape)} for {t.shape[1]} input features")
        n = k_by_n.shape[1]
        if t.order is not None:  # the runtime's column i is the graph's column order[i]
            k_by_n = k_by_n[t.order]
        i = self.emit({"type": "dense", "activation": "linear", "W": np.ascontiguousarray(k_by_n.T), "b": b})
        self.put(_Tensor((t.shape[0], n), producer=i, direct=True))

    def bias_vector(self, c: np.ndarray, n: int, what: str) -> np.ndarray:
        if c.size not in (1, n) or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
            self.fail(f"{what} of shape {list(c.shape)} is not supported (only a scalar, [{n}] or [1, {n}])")
        return np.broadcast_to(c.reshape(-1), (n,)).astype(np.float32)

    def op_gemm(self) -> None:
        t = self.data()
        a = self.attrs(("alpha", "beta", "transA", "transB"))
        if int(a.get("transA", 0)):
            self.fail("transA 1 (transposing the batch) is not supported")
        w = self.weight(1, "B")
        if w.ndim != 2:
            self.fail(f"B of shape {list(w.shape)}: expected 2-D")
        if int(a.get("transB", 0)):
            w = w.T
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if alpha != 1.0:
            w = w * np.float32(alpha)
        c = self.weight(2, "C", optional=True)
        b = None if c is None else self.bias_vector(c, w.shape[1], "C") * np.float32(beta)
        self.dense(t, w, b)

    def op_matmul(self) -> None:
        t = self.data()
        self.attrs(())
        w = self.weight(1, "B")
        if w.ndim != 2:
            self.fail(f"B of shape {list(w.shape)}: only a 2-D constant B is supported")
        self.dense(t, w, None)

    def op_add(self) -> None:
        node = self.node
        self.attrs(())
        if len(node.input) != 2:
            self.fail("expected 2 inputs")
        j = 0 if node.input[0] == self.current else 1
        if node.input[j] != self.current or self.const(node.input[1 - j]) is None:
            self.fail("Add is supported only as the bias of the Conv, Gemm or MatMul right before it "
                      "(one input that layer's output, the other a constant); sums of two data tensors "
                      "(skip connections) are not")
        t = self.tensors[self.current]
        c = self.weight(1 - j, "addend")
        if not t.direct or self.layers[t.producer]["activation"] != "linear":
            self.fail("Add is supported only as the bias of the Conv, Gemm or MatMul right before it")
        layer = self.layers[t.producer]
        if layer["type"] == "dense":
            vec = self.bias_vector(c, t.shape[1], "addend")
        else:  # conv: one value per channel, broadcast over N, H, W (ONNX aligns shapes right)
            if c.ndim > 4:
                self.fail(f"addend of shape {list(c.shape)}: more than 4 dimensions")
            c4 = c.reshape((1,) * (4 - c.ndim) + c.shape)
            ch = t.axes[2]
            if any(c4.shape[d] != 1 for d in range(4) if d != ch) or c4.shape[ch] not in (1, t.shape[ch]):
                self.fail(f"addend of shape {list(c.shape)} is not one value per channel of {list(t.shape)}")
            vec = np.broadcast_to(c4.reshape(-1), (t.shape[ch],)).astype(np.float32)
        layer["b"] = vec if layer["b"] is None else layer["b"] + vec
        self.put(t)


def _unsqueeze_shape(shape: Sequence[int], axes: Sequence[int]) -> list[int]:
    it = iter(shape)
    return [1 if j in set(axes) else next(it) for j in range(len(shape) + len(axes))]


def _relabel(src: Sequence[int], dst: Sequence[int], axes: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """The runtime axes after a 4-D reshape that only moves size-1 axes (tf2onnx writes
    NHWC -> NCHW for one channel as a Reshape): non-1 dimensions keep their order, and the
    runtime's size-1 roles take the output's size-1 axes. None if it is not such a reshape."""
    big_src = [j + 1 for j, d in enumerate(src) if d != 1]
    big_dst = [j + 1 for j, d in enumerate(dst) if d != 1]
    if [src[j - 1] for j in big_src] != [dst[j - 1] for j in big_dst]:
        return None
    where = dict(zip(big_src, big_dst))
    ones = iter(j + 1 for j, d in enumerate(dst) if d == 1)
    return tuple(where[a] if a in where else next(ones) for a in axes)


_FOLD = ("Constant", "Shape", "Gather", "Cast", "Slice", "Concat", "Unsqueeze", "Squeeze",
         "Identity", "Transpose", "Reshape")
_HANDLERS: dict[str, Callable[[_Converter], None]] = {
    "Conv": _Converter.op_conv, "MaxPool": _Converter.op_maxpool, "Gemm": _Converter.op_gemm,
    "MatMul": _Converter.op_matmul, "Add": _Converter.op_add, "Flatten": _Converter.op_flatten,
    "Reshape": _Converter.op_reshape, "Transpose": _Converter.op_transpose, "Relu": _Converter.op_relu,
    "Softmax": _Converter.op_softmax, "Identity": _Converter.op_identity, "Dropout": _Converter.op_identity,
}


def _load(path: str) -> Any:
    onnx = _onnx()
    try:
        model = onnx.load(path)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: a damaged file
        raise OnnxImportError(f"{path}: not a readable ONNX model (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from e
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise OnnxImportError(f"{path}: not a valid ONNX model (truncated or corrupt?): {e}") from e
    return model


def onnx_to_layers(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[int], str]:
    """The layer dicts (write_model's, NHWC), the input shape ``[h, w, c]`` and the graph
    name of an ONNX file. Raises OnnxImportError for anything not supported."""
    path = os.fspath(path)
    model = _load(path)
    try:
        # First assume the graph input is NHWC as given; the first Conv/MaxPool tells
        # otherwise (an NCHW input), before any weight is converted.
        layers, shape = _Converter(path, model, (1, 2, 3), probe=True).run()
    except _LayoutFound as found:
        layers, shape = _Converter(path, model, found.axes, probe=False).run()
    return layers, shape, model.graph.name


def import_onnx(path: str | os.PathLike, out: str | os.PathLike, input_spec: Mapping[str, Any] | None = None,
                classes: Iterable[str] | None = None, name: str | None = None, storage: str = "auto",
                progress: Callable[[str], None] | None = None) -> dict:
    """Convert an ONNX file to a sparseinfer model file; return its manifest.

    ``input_spec``: the manifest's ``input`` (docs/format.md); None for
    sparseinfer.export.default_input_spec of the graph's input shape (as for Keras and VGG19
    imports), or, for channel counts other than 1 and 3, the raw values (mean 0, std 1).
    ``storage``: ``auto`` stores each weight as CSR where that is smaller (pruned weights),
    ``dense`` or ``csr`` force one. ``name``: defaults to the graph's name, else the file's.
    Everything is read and checked before anything is written, and write_model writes a
    temporary file renamed over ``out`` at the end: ``out`` appears whole or not at all.
    """
    say = progress or (lambda line: None)
    _onnx()  # a missing package is the first thing to say
    path, out = os.fspath(path), os.fspath(out)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise OnnxImportError(f"{out}: directory {out_dir} does not exist")
    t0 = time.perf_counter()
    say(f"reading {path}: {os.path.getsize(path) / 1e6:.1f} MB")
    layers, shape, graph_name = onnx_to_layers(path)
    weighted = [L for L in layers if "W" in L]
    params = sum(L["W"].size for L in weighted)
    nnz = sum(int(np.count_nonzero(L["W"])) for L in weighted)
    say(f"{len(layers)} layers ({', '.join(L['type'] for L in layers)}), {params:,} weights, "
        f"{nnz / max(params, 1):.1%} non-zero; input {shape[0]}x{shape[1]}x{shape[2]} "
        f"({time.perf_counter() - t0:.1f} s)")
    if input_spec is None:
        try:
            spec = default_input_spec(shape)
        except ValueError:
            spec = {"shape": shape, "mean": [0.0], "std": [1.0]}
    else:
        spec = dict(input_spec)
        spec.setdefault("shape", shape)
        if [int(s) for s in spec["shape"]] != shape:
            raise OnnxImportError(f"{path}: input_spec shape {list(spec['shape'])} does not match the "
                                  f"graph's input {shape} (h, w, c)")
    model_name = name or graph_name or os.path.splitext(os.path.basename(path))[0]
    manifest = write_model(out, layers, spec, classes=classes, name=model_name, storage=storage)
    csr = [L["name"] for L in manifest["layers"] if L.get("weight", {}).get("format") == "csr"]
    say(f"done: {out}, {os.path.getsize(out) / 1e6:.1f} MB, CSR: {', '.join(csr) or 'none'}, "
        f"{time.perf_counter() - t0:.1f} s")
    return manifest


def main(argv: Sequence[str] | None = None, prog: str = "sparseinfer import") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Import an ONNX model (a chain of Conv, MaxPool, "
                                "Gemm/MatMul, Relu, Softmax, ...) as a sparseinfer model file. See docs/onnx.md.")
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX file")
    p.add_argument("--out", required=True, metavar="MODEL.npz", help="the model file to write")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)
    progress = None if a.quiet else (lambda line: print(f"{prog}: {line}", flush=True))
    try:
        import_onnx(a.model, a.out, progress=progress)
    except (OSError, ValueError) as e:  # OnnxImportError and write_model's errors carry the detail
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
