"""Synthetic OpenVINO IR models for the benchmark: a stack of dense layers, and a ResNet-50-like conv net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

DENSE_WIDTH = 4096  # one 4096x4096 fp32 layer is 64 MiB


def make_dense_ir(xml: Path, weight_bytes: int, *, seed: int = 0) -> Path:
    """A stack of MatMul+Add+ReLU layers whose .bin holds `weight_bytes` (a multiple of 64 MiB) of fp32 weights."""
    rng = np.random.default_rng(seed)
    width = DENSE_WIDTH
    layers = max(1, weight_bytes // (4 * width * width))
    x = ops.parameter([1, width], np.float32, name="x")
    node: ov.Node = x
    for _ in range(layers):
        w = rng.random((width, width), dtype=np.float32)
        w -= 0.5
        w *= 2 / np.sqrt(width)
        bias = ops.constant(np.zeros((1, width), np.float32))
        node = ops.relu(ops.add(ops.matmul(node, ops.constant(w), False, True), bias))
        del w
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([node], [x], "dense"), xml, compress_to_fp16=False)
    return xml


def _fq(node: ov.Node, lo: float, hi: float) -> ov.Node:
    """FakeQuantize to 256 levels, as NNCF's INT8 post-training quantization writes it."""
    c = [ops.constant(np.array(v, np.float32)) for v in (lo, hi, lo, hi)]
    return ops.fake_quantize(node, c[0], c[1], c[2], c[3], 256)


def _conv(
    node: ov.Node, rng: np.random.Generator, cin: int, cout: int, k: int, stride: int, relu: bool = True,
    int8: bool = False,
) -> ov.Node:  # fmt: skip
    w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(np.float32)
    pad = k // 2
    weights: ov.Node = ops.constant(w)
    if int8:
        node, weights = _fq(node, 0.0, 8.0), _fq(weights, float(-np.abs(w).max()), float(np.abs(w).max()))
    out = ops.convolution(node, weights, [stride, stride], [pad, pad], [pad, pad], [1, 1])
    out = ops.add(out, ops.constant(np.zeros((1, cout, 1, 1), np.float32)))  # folded batch norm
    return ops.relu(out) if relu else out


def make_resnet_ir(xml: Path, *, blocks: tuple[int, ...] = (3, 4, 6, 3), seed: int = 0, int8: bool = False) -> Path:
    """ResNet-50-like (bottleneck blocks, batch norm folded), input [1, 3, 224, 224], random weights.

    `int8` puts FakeQuantize on every convolution's input and weights, as an INT8 model from NNCF has.
    """
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 3, 224, 224], np.float32, name="x")
    node = _conv(x, rng, 3, 64, 7, 2)
    node = ops.max_pool(node, [2, 2], [1, 1], [1, 1], [1, 1], [3, 3]).output(0)
    cin = 64
    for stage, count in enumerate(blocks):
        mid = 64 * 2**stage
        cout = mid * 4
        for i in range(count):
            stride = 2 if i == 0 and stage > 0 else 1
            y = _conv(node, rng, cin, mid, 1, 1, int8=int8)
            y = _conv(y, rng, mid, mid, 3, stride, int8=int8)
            y = _conv(y, rng, mid, cout, 1, 1, relu=False, int8=int8)
            short = _conv(node, rng, cin, cout, 1, stride, relu=False, int8=int8) if i == 0 else node
            node = ops.relu(ops.add(y, short))
            cin = cout
    node = ops.reduce_mean(node, ops.constant(np.array([2, 3], np.int64)), False)
    fc = (rng.standard_normal((1000, cin)) / np.sqrt(cin)).astype(np.float32)
    node = ops.matmul(node, ops.constant(fc), False, True)
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([node], [x], "resnet"), xml, compress_to_fp16=False)
    return xml
