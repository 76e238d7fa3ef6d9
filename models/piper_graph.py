"""A Piper voice's ONNX graph with its 1-D convolutions run as 2-D ones: the same audio for less CPU.

Piper's VITS voice spends two thirds of its time in `Conv` nodes over 1-D sequences, most of them in the
HiFi-GAN decoder at 11-22 kHz. onnxruntime runs a 1-D convolution as im2col and a matrix product, but has
blocked direct kernels (its NCHWc layout) for 2-D ones. Each `Conv` / `ConvTranspose` on an (N, C, L) tensor
with a constant weight becomes Unsqueeze -> the same convolution on (N, C, 1, L) with a (1, k) kernel -> Squeeze:
mathematically the same operation, summed in another order, so the rendered speech differs by at most 2 in
32768 (`tests/models_tts/test_piper_graph.py`). `python -m bench.tts_cpu` (`bench/tts_cpu.json`): 20% less CPU
per sentence on the project's 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["convolutions_as_2d", "voice_graph"]

_CONVOLUTIONS = ("Conv", "ConvTranspose")
_AXES = "piper_graph.axis2"


def convolutions_as_2d(model: onnx.ModelProto) -> int:
    """Rewrites `model` in place; returns how many convolutions now run in 2-D (0: nothing to do)."""
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = attrs.get("kernel_shape")
        if (
            node.op_type not in _CONVOLUTIONS
            or node.input[1] not in weights
            or kernel is None
            or len(kernel) != 1
            or "output_shape" in attrs  # a 1-D shape that would need rewriting too: left as it is
        ):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        weight_2d = numpy_helper.from_array(np.ascontiguousarray(weight[:, :, None, :]), f"{node.input[1]}.2d")
        graph.initializer.append(weight_2d)
        new_attrs: dict[str, object] = {"kernel_shape": [1, kernel[0]]}
        for name in ("dilations", "strides", "output_padding"):
            if name in attrs:
                new_attrs[name] = [1 if name != "output_padding" else 0, attrs[name][0]]
        if "pads" in attrs:
            begin, end = attrs["pads"]
            new_attrs["pads"] = [0, begin, 0, end]
        if "group" in attrs:
            new_attrs["group"] = attrs["group"]
        if "auto_pad" in attrs:
            new_attrs["auto_pad"] = attrs["auto_pad"]
        out = node.output[0]  # unique in the graph, unlike node names (optional)
        x_2d, y_2d = f"{out}.in_2d", f"{out}.out_2d"
        nodes += [
            helper.make_node("Unsqueeze", [node.input[0], _AXES], [x_2d], name=f"{out}.unsqueeze"),
            helper.make_node(
                node.op_type,
                [x_2d, weight_2d.name, *node.input[2:]],
                [y_2d],
                name=f"{out}.2d",
                **new_attrs,  # type: ignore[arg-type]
            ),
            helper.make_node("Squeeze", [y_2d, _AXES], list(node.output), name=f"{out}.squeeze"),
        ]
        rewritten += 1
    if not rewritten:
        return 0
    graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), _AXES))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return rewritten


def voice_graph(path: Path) -> bytes:
    """The voice at `path`, its convolutions in 2-D, serialised for `onnxruntime.InferenceSession`."""
    model = onnx.load(str(path))
    # Squeeze/Unsqueeze take their axes as an input from opset 13; older graphs keep their 1-D convolutions.
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= 13:
        convolutions_as_2d(model)
    serialised: bytes = model.SerializeToString()
    return serialised
