"""The voice graph with its convolutions in 2-D computes what the shipped one does."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.piper_graph import convolutions_as_2d


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"x": x})[0]
    return out


def _vocoder_like() -> onnx.ModelProto:
    """A 1-D conv stack with what HiFi-GAN uses: dilation, padding, groups, a strided transposed convolution with
    output padding, and a convolution whose weight is computed (left alone)."""
    rng = np.random.default_rng(7)
    weights = {
        "w1": rng.standard_normal((8, 4, 3)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 4, 5)).astype(np.float32),  # groups=2: 8 in / 2 per group
        "wt": rng.standard_normal((8, 6, 4)).astype(np.float32),
        "bt": rng.standard_normal(6).astype(np.float32),
        "scale": np.array([0.5], dtype=np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3], dilations=[3], pads=[3, 3]),
        helper.make_node("LeakyRelu", ["c1"], ["r1"], alpha=0.1),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[5], pads=[2, 2], group=2),
        helper.make_node("Add", ["c2", "c1"], ["s"]),
        helper.make_node(
            "ConvTranspose", ["s", "wt", "bt"], ["up"], kernel_shape=[4], strides=[2], pads=[1, 1], output_padding=[1]
        ),
        helper.make_node("Mul", ["wt", "scale"], ["wt_scaled"]),
        helper.make_node("ConvTranspose", ["s", "wt_scaled"], ["up2"], kernel_shape=[4], strides=[2], pads=[1, 1]),
        helper.make_node("Tanh", ["up"], ["y"]),
        helper.make_node("Tanh", ["up2"], ["y2"]),
    ]
    graph = helper.make_graph(
        nodes,
        "vocoder_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, None])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, None]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 6, None]),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def test_2d_convolutions_give_the_same_output() -> None:
    model = _vocoder_like()
    x = np.random.default_rng(1).standard_normal((1, 4, 57)).astype(np.float32)
    before = _run(model, x)

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert convolutions_as_2d(rewritten) == 3  # the one with a computed weight stays 1-D
    onnx.checker.check_model(rewritten)
    kernels = {
        n.name: len(helper.get_attribute_value(a))
        for n in rewritten.graph.node
        for a in n.attribute
        if a.name == "kernel_shape"
    }
    assert sorted(kernels.values()) == [1, 2, 2, 2]

    after = _run(rewritten, x)
    assert after.shape == before.shape == (1, 6, 115)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert convolutions_as_2d(rewritten) == 0  # nothing left to do


@pytest.mark.slow
def test_the_voice_sounds_the_same_with_2d_convolutions() -> None:
    from models.tts import Synthesizer, TtsConfig

    sentence = "Eight of spades, four of clubs, seven of hearts."
    shipped = Synthesizer(TtsConfig(deterministic=True, conv2d=False)).synthesize(sentence)
    conv2d = Synthesizer(TtsConfig(deterministic=True, conv2d=True)).synthesize(sentence)
    assert len(conv2d) == len(shipped) > 22050  # over a second of speech at the voice's rate
    # The same computation in another order of additions: at most a rounding step or two of 16-bit audio.
    assert int(np.abs(conv2d.astype(np.int32) - shipped.astype(np.int32)).max()) <= 2


def test_a_graph_the_rewrite_breaks_loads_as_shipped(tmp_path, monkeypatch, caplog) -> None:
    import models.tts as tts

    path = tmp_path / "voice.onnx"
    onnx.save(_vocoder_like(), str(path))
    monkeypatch.setattr(tts, "voice_graph", lambda _path: b"not an onnx graph")
    with caplog.at_level("WARNING", logger="models.tts"):
        session = tts._session(path, 1, conv2d=True)
    assert [i.name for i in session.get_inputs()] == ["x"]  # the shipped graph, which loads
    assert "loading the graph as shipped" in caplog.text
