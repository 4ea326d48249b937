"""Tiny ONNX doubles of the InsightFace files with their exact I/O contracts (specs/faceswap.md §9).

They are real ONNX graphs of the same interface (input/output names, shapes, output order, the
``buff2fs`` emap as last initializer), small and deterministic, written where the weights
manifest puts the real files so the production classes load them unchanged. An ONNX file
carries its own architecture, so unlike the torch checkpoints no config sidecar is needed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 11  # believed opset of the originals (§3.6, §9.4)
IR_VERSION = 6

# Manifest destinations, relative to the weights directory.
DET_10G = "insightface/models/buffalo_l/det_10g.onnx"
W600K_R50 = "insightface/models/buffalo_l/w600k_r50.onnx"
SCRFD_10G_BNKPS = "insightface/models/antelopev2/scrfd_10g_bnkps.onnx"
GLINTR100 = "insightface/models/antelopev2/glintr100.onnx"
INSWAPPER_128 = "insightface/inswapper_128.onnx"

SCRFD_STRIDES = (8, 16, 32)
SCRFD_ANCHORS = 2
# det_10g output names by head and stride (§9.2): scores, then boxes, then keypoints.
SCRFD_OUTPUT_NAMES = {
    "score": ("448", "471", "494"),
    "bbox": ("451", "474", "497"),
    "kps": ("454", "477", "500"),
}
SCRFD_HEAD_WIDTHS = {"score": 1, "bbox": 4, "kps": 10}
# Plausible 5-point layout around an anchor, in units of 1.5 strides (§9.4).
SCRFD_KPS_OFFSETS = np.array(
    [[-0.45, -0.35], [0.45, -0.35], [0.0, 0.05], [-0.35, 0.45], [0.35, 0.45]], dtype=np.float32
)


def _model(nodes, inputs, outputs, initializers, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def tiny_scrfd_model() -> onnx.ModelProto:
    """det_10g's interface: ``input.1`` [1, 3, '?', '?'] -> 9 rank-2 outputs (§9.2).

    Each head is a 1x1 convolution with the level's stride, laid out (row, col, anchor) by an NHWC
    transpose and a reshape. Only the stride-32 score head is live (weights 8, bias -12 on the
    normalised input): it fires on bright pixels, so a white square on black gives one face with
    a 1.5-stride box and the fixed keypoint layout (§9.4).
    """
    nodes, inits, outputs = [], [], []
    for head, width in SCRFD_HEAD_WIDTHS.items():
        channels = width * SCRFD_ANCHORS
        for level, stride in enumerate(SCRFD_STRIDES):
            weight = np.zeros((channels, 3, 1, 1), dtype=np.float32)
            if head == "score":
                live = stride == 32
                weight[:] = 8.0 if live else 0.0
                bias = np.full(channels, -12.0 if live else -20.0, dtype=np.float32)
            elif head == "bbox":
                bias = np.full(channels, 1.5, dtype=np.float32)
            else:
                bias = np.tile((SCRFD_KPS_OFFSETS * 1.5).ravel(), SCRFD_ANCHORS)
            tag = f"{head}{stride}"
            inits += [_tensor(f"{tag}.weight", weight), _tensor(f"{tag}.bias", bias),
                      _tensor(f"{tag}.shape", np.array([-1, width], dtype=np.int64))]
            out = SCRFD_OUTPUT_NAMES[head][level]
            reshaped = f"{tag}_flat" if head == "score" else out
            nodes += [
                helper.make_node("Conv", ["input.1", f"{tag}.weight", f"{tag}.bias"], [f"{tag}_conv"],
                                 name=f"Conv_{tag}", kernel_shape=[1, 1], strides=[stride, stride]),
                helper.make_node("Transpose", [f"{tag}_conv"], [f"{tag}_nhwc"], name=f"Transpose_{tag}",
                                 perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{tag}_nhwc", f"{tag}.shape"], [reshaped], name=f"Reshape_{tag}"),
            ]
            if head == "score":
                nodes.append(helper.make_node("Sigmoid", [reshaped], [out], name=f"Sigmoid_{tag}"))
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, width]))
    order = [n for head in SCRFD_OUTPUT_NAMES.values() for n in head]
    outputs.sort(key=lambda o: order.index(o.name))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])]
    return _model(nodes, inputs, outputs, inits, "tiny_scrfd")


def tiny_arcface_model(output_name: str = "683", seed: int = 0) -> onnx.ModelProto:
    """w600k_r50's interface: ``input.1`` ['None', 3, 112, 112] -> ``output_name`` ['None', 512].

    AveragePool 8x8 -> Flatten -> Gemm with random weights (§9.4); no Sub/Mul node up front, so
    the 127.5 / 127.5 input normalisation applies as for the real file.
    """
    rng = np.random.default_rng(seed)
    features = 3 * (112 // 8) ** 2
    inits = [
        _tensor("fc.weight", (rng.standard_normal((features, 512)) / np.sqrt(features)).astype(np.float32)),
        _tensor("fc.bias", (0.01 * rng.standard_normal(512)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], name="AveragePool_0",
                         kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="Flatten_1", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], [output_name], name="Gemm_2"),
    ]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["None", 512])]
    return _model(nodes, inputs, outputs, inits, "tiny_arcface")


def tiny_inswapper_model(
    seed: int = 0, channels: int = 8, batch: int | str = 1, emap: np.ndarray | None = None
) -> onnx.ModelProto:
    """inswapper_128's interface: ``target`` [batch, 3, 128, 128] and ``source`` [1, 512] ->
    ``output`` [batch, 3, 128, 128] in (0, 1), with the 512x512 ``buff2fs`` emap as the last
    initializer, read by no node (§9.1).

    One block of the real structure (§3.5): conv encoder + LeakyReLU(0.2), instance norm
    decomposed into ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div, AdaIN scale/shift from
    ``Gemm(source)``, a conv and a residual add, then a transposed-conv decoder and (tanh + 1) / 2.
    ``batch`` may be a symbolic name, as in the re-exports that batch pixel-boost tiles; ``emap``
    replaces the random one (parity fixtures store theirs).
    """
    rng = np.random.default_rng(seed)
    c = channels

    def normal(shape, fan_in):
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    f32 = np.float32
    inits = [
        _tensor("enc.weight", normal((c, 3, 3, 3), 27)),
        _tensor("enc.bias", np.zeros(c, f32)),
        _tensor("eps", np.array(1e-5, f32)),
        _tensor("style_scale.weight", normal((512, c), 512)),
        _tensor("style_scale.bias", np.ones(c, f32)),
        _tensor("style_shift.weight", normal((512, c), 512)),
        _tensor("style_shift.bias", np.zeros(c, f32)),
        _tensor("style.shape", np.array([1, c, 1, 1], dtype=np.int64)),
        _tensor("res.weight", normal((c, c, 3, 3), 9 * c)),
        _tensor("res.bias", np.zeros(c, f32)),
        _tensor("dec.weight", normal((c, 3, 2, 2), 4 * c)),
        _tensor("dec.bias", np.zeros(3, f32)),
        _tensor("one", np.array(1.0, f32)),
        _tensor("half", np.array(0.5, f32)),
        _tensor("buff2fs", normal((512, 512), 512) if emap is None else np.asarray(emap, f32)),
    ]
    node = helper.make_node
    nodes = [
        node("Conv", ["target", "enc.weight", "enc.bias"], ["enc"], name="Conv_0",
             kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        node("LeakyRelu", ["enc"], ["enc_act"], name="LeakyRelu_1", alpha=0.2),
        node("ReduceMean", ["enc_act"], ["mu"], name="ReduceMean_2", axes=[2, 3], keepdims=1),
        node("Sub", ["enc_act", "mu"], ["centred"], name="Sub_3"),
        node("Mul", ["centred", "centred"], ["sq"], name="Mul_4"),
        node("ReduceMean", ["sq"], ["var"], name="ReduceMean_5", axes=[2, 3], keepdims=1),
        node("Add", ["var", "eps"], ["var_eps"], name="Add_6"),
        node("Sqrt", ["var_eps"], ["sd"], name="Sqrt_7"),
        node("Div", ["centred", "sd"], ["normed"], name="Div_8"),
        node("Gemm", ["source", "style_scale.weight", "style_scale.bias"], ["scale"], name="Gemm_9"),
        node("Gemm", ["source", "style_shift.weight", "style_shift.bias"], ["shift"], name="Gemm_10"),
        node("Reshape", ["scale", "style.shape"], ["scale4"], name="Reshape_11"),
        node("Reshape", ["shift", "style.shape"], ["shift4"], name="Reshape_12"),
        node("Mul", ["normed", "scale4"], ["scaled"], name="Mul_13"),
        node("Add", ["scaled", "shift4"], ["adain"], name="Add_14"),
        node("Conv", ["adain", "res.weight", "res.bias"], ["res"], name="Conv_15",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("Add", ["res", "enc_act"], ["block"], name="Add_16"),
        node("ConvTranspose", ["block", "dec.weight", "dec.bias"], ["dec"], name="ConvTranspose_17",
             kernel_shape=[2, 2], strides=[2, 2]),
        node("Tanh", ["dec"], ["tanh"], name="Tanh_18"),
        node("Add", ["tanh", "one"], ["shifted"], name="Add_19"),
        node("Mul", ["shifted", "half"], ["output"], name="Mul_20"),
    ]
    inputs = [
        helper.make_tensor_value_info("target", TensorProto.FLOAT, [batch, 3, 128, 128]),
        helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, 128, 128])]
    return _model(nodes, inputs, outputs, inits, "tiny_inswapper")


def write_tiny_insightface(dest_dir: Path | str, seed: int = 0) -> dict[str, Path]:
    """Write the five doubles at their manifest paths under ``dest_dir``; returns {relative: path}."""
    dest_dir = Path(dest_dir)
    models = {
        DET_10G: tiny_scrfd_model(),
        W600K_R50: tiny_arcface_model("683", seed),
        SCRFD_10G_BNKPS: tiny_scrfd_model(),
        # glintr100's output name is believed to be 1333 (§9.3, unverified).
        GLINTR100: tiny_arcface_model("1333", seed + 1),
        INSWAPPER_128: tiny_inswapper_model(seed),
    }
    return {rel: _save(model, dest_dir / rel) for rel, model in models.items()}
