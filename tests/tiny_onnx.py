"""Tiny random ONNX models with the input/output signatures of insightface's files:
inswapper_128.onnx (target 1x3x128x128 + source 1x512 -> 1x3x128x128, emap as the last
initializer), a recognition model (Nx3x112x112 -> Nx512) and genderage.onnx (1x3x96x96 -> 1x3)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _init(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def inswapper(path: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Output = sigmoid(4 (target - 0.5) + per-channel shift from the source latent). Returns (path, emap)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (512, 3)).astype(np.float32)
    emap = rng.normal(0, 1 / 16, (512, 512)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["source", "w"], ["shift"]),
             helper.make_node("Reshape", ["shift", "shape"], ["shift4"]),
             helper.make_node("Sub", ["target", "half"], ["centred"]),
             helper.make_node("Mul", ["centred", "four"], ["scaled"]),
             helper.make_node("Add", ["scaled", "shift4"], ["pre"]),
             helper.make_node("Sigmoid", ["pre"], ["output"])]
    graph = helper.make_graph(
        nodes, "tiny_inswapper",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        [_init("w", w), _init("shape", np.array([1, 3, 1, 1], np.int64)), _init("half", np.float32(0.5)),
         _init("four", np.float32(4.0)), _init("emap", emap)])
    return _save(graph, path), emap


def _pooled_linear(path: Path, name: str, side: int, out: int, w: np.ndarray, b: np.ndarray) -> Path:
    nodes = [helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["output"])]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", out])], [_init("w", w), _init("b", b)])
    return _save(graph, path)


def recognition(path: Path, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    return _pooled_linear(path, "tiny_arcface", 112, 512, rng.normal(0, 1, (3, 512)).astype(np.float32),
                          rng.normal(0, 1, 512).astype(np.float32))


def genderage(path: Path, male: bool) -> Path:
    """Says male (or female) for any face: the bias decides the gender logits; age 0.3 (30 years)."""
    b = np.array([0.0, 10.0, 0.3] if male else [10.0, 0.0, 0.3], np.float32)
    return _pooled_linear(path, "tiny_genderage", 96, 3, np.zeros((3, 3), np.float32), b)


def scrfd(path: Path, seed: int = 2, score_bias: float = -1.0) -> Path:
    """antelopev2's scrfd_10g_bnkps.onnx signature: NCHW input of any size, nine outputs (scores,
    box distances, keypoints for strides 8, 16 and 32, two anchors each), every anchor's outputs a
    random 1x1 convolution of the image averaged over its stride cell (box distances kept positive)."""
    rng = np.random.default_rng(seed)
    nodes, inits, outputs = [], [], {}
    for stride in (8, 16, 32):
        nodes.append(helper.make_node("AveragePool", ["input.1"], [f"cell{stride}"], kernel_shape=[stride, stride],
                                      strides=[stride, stride]))
        for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
            name = f"{kind}_{stride}"
            w = rng.normal(0, 2.0, (2 * width, 3, 1, 1)).astype(np.float32)
            b = np.full(2 * width, score_bias if kind == "score" else 0.5, np.float32)
            inits += [_init(f"{name}_w", w), _init(f"{name}_b", b)]
            nodes += [helper.make_node("Conv", [f"cell{stride}", f"{name}_w", f"{name}_b"], [f"{name}_conv"]),
                      helper.make_node("Transpose", [f"{name}_conv"], [f"{name}_nhwc"], perm=[0, 2, 3, 1]),
                      helper.make_node("Reshape", [f"{name}_nhwc", f"shape{width}"], [f"{name}_flat"])]
            final = {"score": "Sigmoid", "bbox": "Softplus", "kps": "Identity"}[kind]
            nodes.append(helper.make_node(final, [f"{name}_flat"], [name]))
            outputs[name] = helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{stride}", width])
    inits += [_init(f"shape{w}", np.array([-1, w], np.int64)) for w in (1, 4, 10)]
    order = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in (8, 16, 32)]
    graph = helper.make_graph(nodes, "tiny_scrfd",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [outputs[n] for n in order], inits)
    return _save(graph, path)
