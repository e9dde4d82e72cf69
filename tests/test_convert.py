"""Converting source models (ONNX, TensorFlow Lite) to OpenVINO IR in memory: results, options, errors, leaks.

The sources are real models made here: ONNX with the `onnx` package's helper API (one with its weights in an
external data file), TensorFlow Lite with the flatbuffers code of the `tflite` package, and a PaddlePaddle
.pdmodel/.pdiparams pair and a TensorFlow frozen graph encoded field by field. Inference runs with
INFERENCE_PRECISION_HINT f32, so the CPU plugin's bf16 default (on CPUs that have it) cannot hide a difference
between fp16 and fp32 weights.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import onnx
import openvino as ov
import pytest
import tflite
from onnx import TensorProto, helper, numpy_helper

from hatch_ovcrypt.sources import convert
from hatch_ovcrypt.sources.convert import (
    OVC_ROUTE,
    RUNTIME_ROUTE,
    ConversionError,
    ConversionOptions,
    ConvertedIR,
    conversion_route,
    convert_to_ir,
    is_source,
    onnx_external_data,
    parse_conversion_options,
    source_files,
    source_format,
)
from ovcrypt_runtime._errors import OvcryptError
from ovcrypt_runtime._pipelines import memfiles as _memfiles
from ovcrypt_runtime._pipelines.memfiles import memory_backed_dir
from tests.leakscan import LeakScanner
from tests.vision_onnx import sample_image, yolo_graph

WIDTH = 64
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
AT = "tool.hatch.build.targets.wheel.hooks.ovcrypt.models.rec"


# --- models ----------------------------------------------------------------------------------------------------


def onnx_mlp(layers: int = 2, *, width: int = WIDTH, batch: int | str = "N", seed: int = 0) -> onnx.ModelProto:
    """MatMul + Add + Relu layers with random fp32 initializers; input "x" is [batch, width] (batch dynamic)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = (rng.standard_normal(width) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "y" if i == layers - 1 else f"h{i}"
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [out]),
        ]
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hatch-ovcrypt tests")
    onnx.checker.check_model(model)
    return model


def save_onnx(model: onnx.ModelProto, path: Path, *, external: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if external is None:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=external,
            size_threshold=0, convert_attribute=True,
        )  # fmt: skip
    return path


def make_tflite(path: Path, *, width: int = WIDTH, seed: int = 0) -> Path:
    """FULLY_CONNECTED (weights [width, width], bias, fused RELU) on input "x" [1, width], as a .tflite file."""
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    bias = (rng.standard_normal(width) * 0.1).astype(np.float32)
    fb = flatbuffers.Builder(1024)
    buffers = [_tfl_buffer(fb), _tfl_buffer(fb, weights.tobytes()), _tfl_buffer(fb, bias.tobytes()),
               _tfl_buffer(fb), _tfl_buffer(fb)]  # fmt: skip
    tensors = [_tfl_tensor(fb, "x", [1, width], 3), _tfl_tensor(fb, "w", [width, width], 1),
               _tfl_tensor(fb, "b", [width], 2), _tfl_tensor(fb, "y", [1, width], 4)]  # fmt: skip
    subgraph = _tfl_subgraph(fb, tensors, _tfl_fully_connected(fb, [0, 1, 2], [3]), [0], [3])
    tflite.OperatorCodeStart(fb)
    tflite.OperatorCodeAddBuiltinCode(fb, tflite.BuiltinOperator.FULLY_CONNECTED)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(fb, tflite.BuiltinOperator.FULLY_CONNECTED)
    tflite.OperatorCodeAddVersion(fb, 1)
    opcode = tflite.OperatorCodeEnd(fb)
    opcode_vec = _tfl_offsets(fb, tflite.ModelStartOperatorCodesVector, [opcode])
    subgraph_vec = _tfl_offsets(fb, tflite.ModelStartSubgraphsVector, [subgraph])
    buffer_vec = _tfl_offsets(fb, tflite.ModelStartBuffersVector, buffers)
    tflite.ModelStart(fb)
    tflite.ModelAddVersion(fb, 3)
    tflite.ModelAddOperatorCodes(fb, opcode_vec)
    tflite.ModelAddSubgraphs(fb, subgraph_vec)
    tflite.ModelAddBuffers(fb, buffer_vec)
    fb.Finish(tflite.ModelEnd(fb), file_identifier=b"TFL3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(fb.Output()))
    return path


def _tfl_ints(fb: Any, start: Any, values: Sequence[int]) -> int:
    start(fb, len(values))
    for v in reversed(values):
        fb.PrependInt32(v)
    return int(fb.EndVector())


def _tfl_offsets(fb: Any, start: Any, values: Sequence[int]) -> int:
    start(fb, len(values))
    for v in reversed(values):
        fb.PrependUOffsetTRelative(v)
    return int(fb.EndVector())


def _tfl_buffer(fb: Any, data: bytes = b"") -> int:
    vec = fb.CreateByteVector(data) if data else None
    tflite.BufferStart(fb)
    if vec is not None:
        tflite.BufferAddData(fb, vec)
    return int(tflite.BufferEnd(fb))


def _tfl_tensor(fb: Any, name: str, shape: Sequence[int], buffer: int) -> int:
    label, dims = fb.CreateString(name), _tfl_ints(fb, tflite.TensorStartShapeVector, shape)
    tflite.TensorStart(fb)
    tflite.TensorAddShape(fb, dims)
    tflite.TensorAddType(fb, tflite.TensorType.FLOAT32)
    tflite.TensorAddBuffer(fb, buffer)
    tflite.TensorAddName(fb, label)
    return int(tflite.TensorEnd(fb))


def _tfl_fully_connected(fb: Any, inputs: Sequence[int], outputs: Sequence[int]) -> int:
    tflite.FullyConnectedOptionsStart(fb)
    tflite.FullyConnectedOptionsAddFusedActivationFunction(fb, tflite.ActivationFunctionType.RELU)
    options = tflite.FullyConnectedOptionsEnd(fb)
    op_in = _tfl_ints(fb, tflite.OperatorStartInputsVector, inputs)
    op_out = _tfl_ints(fb, tflite.OperatorStartOutputsVector, outputs)
    tflite.OperatorStart(fb)
    tflite.OperatorAddOpcodeIndex(fb, 0)
    tflite.OperatorAddInputs(fb, op_in)
    tflite.OperatorAddOutputs(fb, op_out)
    tflite.OperatorAddBuiltinOptionsType(fb, tflite.BuiltinOptions.FullyConnectedOptions)
    tflite.OperatorAddBuiltinOptions(fb, options)
    return int(tflite.OperatorEnd(fb))


def _tfl_subgraph(fb: Any, tensors: Sequence[int], operator: int, inputs: Sequence[int], outputs: Sequence[int]) -> int:
    tensor_vec = _tfl_offsets(fb, tflite.SubGraphStartTensorsVector, tensors)
    op_vec = _tfl_offsets(fb, tflite.SubGraphStartOperatorsVector, [operator])
    graph_in = _tfl_ints(fb, tflite.SubGraphStartInputsVector, inputs)
    graph_out = _tfl_ints(fb, tflite.SubGraphStartOutputsVector, outputs)
    name = fb.CreateString("main")
    tflite.SubGraphStart(fb)
    tflite.SubGraphAddTensors(fb, tensor_vec)
    tflite.SubGraphAddInputs(fb, graph_in)
    tflite.SubGraphAddOutputs(fb, graph_out)
    tflite.SubGraphAddOperators(fb, op_vec)
    tflite.SubGraphAddName(fb, name)
    return int(tflite.SubGraphEnd(fb))


# PaddlePaddle and TensorFlow have no small package that writes their formats, so these two are encoded here, field
# by field, after paddle/framework.proto (ProgramDesc) and tensorflow/core/framework/graph.proto (GraphDef).


def _pb_varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative numbers as 64-bit two's complement, as protobuf does
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_int(field: int, n: int) -> bytes:
    return _pb_varint(field << 3) + _pb_varint(n)


def _pb_bytes(field: int, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return _pb_varint(field << 3 | 2) + _pb_varint(len(raw)) + raw


def make_paddle(path: Path, *, width: int = WIDTH, seed: int = 0) -> Path:
    """matmul_v2 + elementwise_add + relu on input "x" [-1, width]: a .pdmodel and its .pdiparams."""
    rng = np.random.default_rng(seed)
    arrays = {"w": (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32),
              "b": (rng.standard_normal(width) * 0.1).astype(np.float32)}  # fmt: skip
    fp32, lod_tensor, feed_minibatch, fetch_list, attr_int, attr_bool = 5, 7, 9, 10, 0, 6

    def tensor_desc(dims: Sequence[int]) -> bytes:
        return _pb_int(1, fp32) + b"".join(_pb_int(2, d) for d in dims)

    def var(name: str, dims: Sequence[int] | None = None, kind: int = lod_tensor, persistable: bool = False) -> bytes:
        var_type = _pb_int(1, kind) + (_pb_bytes(3, _pb_bytes(1, tensor_desc(dims))) if dims is not None else b"")
        return _pb_bytes(1, name) + _pb_bytes(2, var_type) + (_pb_int(3, 1) if persistable else b"")

    def slots(field: int, pairs: Sequence[tuple[str, str]]) -> bytes:
        return b"".join(_pb_bytes(field, _pb_bytes(1, slot) + _pb_bytes(2, arg)) for slot, arg in pairs)

    def op(kind: str, ins: Sequence[tuple[str, str]], outs: Sequence[tuple[str, str]],
           attrs: Sequence[tuple[str, int, int, int]] = ()) -> bytes:  # fmt: skip
        body = slots(1, ins) + slots(2, outs) + _pb_bytes(3, kind)
        return body + b"".join(_pb_bytes(4, _pb_bytes(1, n) + _pb_int(2, t) + _pb_int(f, v)) for n, t, f, v in attrs)

    variables = [var("feed", kind=feed_minibatch, persistable=True), var("fetch", kind=fetch_list, persistable=True),
                 var("x", [-1, width]), var("w", [width, width], persistable=True), var("b", [width], persistable=True),
                 var("m", [-1, width]), var("a", [-1, width]), var("y", [-1, width])]  # fmt: skip
    ops = [
        op("feed", [("X", "feed")], [("Out", "x")], [("col", attr_int, 3, 0)]),
        op("matmul_v2", [("X", "x"), ("Y", "w")], [("Out", "m")],
           [("trans_x", attr_bool, 10, 0), ("trans_y", attr_bool, 10, 0)]),
        op("elementwise_add", [("X", "m"), ("Y", "b")], [("Out", "a")], [("axis", attr_int, 3, -1)]),
        op("relu", [("X", "a")], [("Out", "y")]),
        op("fetch", [("X", "y")], [("Out", "fetch")], [("col", attr_int, 3, 0)]),
    ]  # fmt: skip
    block = _pb_int(1, 0) + _pb_int(2, -1) + b"".join(_pb_bytes(3, v) for v in variables)
    block += b"".join(_pb_bytes(4, o) for o in ops)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_pb_bytes(1, block) + _pb_bytes(4, _pb_int(1, 0)))
    params = b""
    for name in sorted(arrays):  # persistable variables by name, each: headers, TensorDesc, raw data
        desc = tensor_desc(arrays[name].shape)
        params += struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc + arrays[name].tobytes()
    path.with_suffix(".pdiparams").write_bytes(params)
    return path


def make_frozen_graph(path: Path, *, width: int = WIDTH, seed: int = 0) -> Path:
    """A TensorFlow frozen GraphDef: Placeholder "x" [-1, width], MatMul by a Const, BiasAdd, Relu."""
    rng = np.random.default_rng(seed)
    dt_float = 1

    def shape(dims: Sequence[int]) -> bytes:
        return b"".join(_pb_bytes(2, _pb_int(1, d)) for d in dims)

    def attr(name: str, value: bytes) -> bytes:
        return _pb_bytes(5, _pb_bytes(1, name) + _pb_bytes(2, value))

    t, dtype = attr("T", _pb_int(6, dt_float)), attr("dtype", _pb_int(6, dt_float))

    def node(name: str, op: str, inputs: Sequence[str] = (), attrs: bytes = b"") -> bytes:
        return _pb_bytes(1, name) + _pb_bytes(2, op) + b"".join(_pb_bytes(3, i) for i in inputs) + attrs

    def const(name: str, array: np.ndarray) -> bytes:
        tensor = _pb_int(1, dt_float) + _pb_bytes(2, shape(array.shape)) + _pb_bytes(4, array.tobytes())
        return node(name, "Const", attrs=dtype + attr("value", _pb_bytes(8, tensor)))

    nodes = [
        node("x", "Placeholder", attrs=dtype + attr("shape", _pb_bytes(7, shape([-1, width])))),
        const("w", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)),
        const("b", (rng.standard_normal(width) * 0.1).astype(np.float32)),
        node("m", "MatMul", ["x", "w"], t + attr("transpose_a", _pb_int(5, 0)) + attr("transpose_b", _pb_int(5, 0))),
        node("a", "BiasAdd", ["m", "b"], t),
        node("y", "Relu", ["a"], t),
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(_pb_bytes(1, n) for n in nodes) + _pb_bytes(4, _pb_int(1, 1000)))  # versions.producer
    return path


def sample(shape: Sequence[int] = (1, WIDTH), seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run_ir(ir: ConvertedIR, x: np.ndarray) -> np.ndarray:
    """Inference on the converted IR as the runtime does it: read from memory, weights as a tensor."""
    core = ov.Core()
    model = core.read_model(ir.xml, ov.Tensor(np.frombuffer(ir.bin, np.uint8)))
    return np.asarray(core.compile_model(model, "CPU", F32)(x)[0])


def run_file(path: Path, x: np.ndarray) -> np.ndarray:
    """Inference with OpenVINO reading a model file itself (a source, or an IR .xml)."""
    return np.asarray(ov.Core().compile_model(str(path), "CPU", F32)(x)[0])


def same_xml(ours: bytes, reference: Path) -> bool:
    """The same IR .xml, but for the numbers OpenVINO puts in the names it makes up (Transpose_1938, Model102).

    Those count every node (or model) the process has made so far, so even two ov.convert_model calls of one
    source in one process differ there.
    """
    auto = re.compile(rb'name="([A-Za-z]+_?)\d+')
    return auto.sub(rb'name="\1N', ours) == auto.sub(rb'name="\1N', reference.read_bytes())


def ovc_reference(source: Path, out: Path, *, compress: bool = True, input: Any = None) -> Path:
    """What `ovc` makes of the source: ov.save_model(ov.convert_model(source)), on disk."""
    kwargs = {} if input is None else {"input": input}
    xml = out / "ref.xml"
    ov.save_model(ov.convert_model(str(source), **kwargs), str(xml), compress_to_fp16=compress)
    return xml


def runtime_reference(source: Path, out: Path) -> Path:
    """What OpenVINO's runtime reads from the source, saved as it is: ov.save_model(Core().read_model(source))."""
    xml = out / "runtime.xml"
    ov.save_model(ov.Core().read_model(str(source)), str(xml), compress_to_fp16=False)
    return xml


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return save_onnx(onnx_mlp(3), tmp_path / "models" / "mlp.onnx")


@pytest.fixture
def mlp_external(tmp_path: Path) -> Path:
    return save_onnx(onnx_mlp(3, seed=1), tmp_path / "models" / "ext.onnx", external="ext.onnx.data")


@pytest.fixture
def tflite_model(tmp_path: Path) -> Path:
    return make_tflite(tmp_path / "models" / "fc.tflite")


@pytest.fixture
def paddle_model(tmp_path: Path) -> Path:
    return make_paddle(tmp_path / "models" / "inference.pdmodel")


@pytest.fixture
def frozen_graph(tmp_path: Path) -> Path:
    return make_frozen_graph(tmp_path / "models" / "frozen.pb")


SOURCES = ["mlp", "mlp_external", "tflite_model", "paddle_model", "frozen_graph"]


# --- inference is bit-identical --------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", SOURCES)
def test_uncompressed_is_bit_identical_to_openvino_reading_the_source(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    source: Path = request.getfixturevalue(fixture)
    x = sample()
    with convert_to_ir(source, ConversionOptions(compress_to_fp16=False)) as ir:
        assert ir.backing == "memfd"
        assert ir.xml.startswith(b"<?xml")
        got = run_ir(ir, x)
    expected = run_file(source, x)
    assert got.dtype == expected.dtype == np.float32
    assert np.array_equal(got, expected)
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("fixture", SOURCES)
def test_default_is_bit_identical_to_ovc(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Default options (fp16 weights) give what ov.save_model(ov.convert_model(src)) gives: the same .bin and .xml."""
    source: Path = request.getfixturevalue(fixture)
    x = sample()
    reference = ovc_reference(source, tmp_path)
    with convert_to_ir(source, ConversionOptions()) as ir:
        assert same_xml(ir.xml, reference)
        assert ir.bin == reference.with_suffix(".bin").read_bytes()
        got = run_ir(ir, x)
    assert got.tobytes() == run_file(reference, x).tobytes()
    # ... and the option did something: fp16 weights, half the size, other results than the fp32 source's
    with convert_to_ir(source, ConversionOptions(compress_to_fp16=False)) as full:
        assert full.bin_size > 1.9 * len(reference.with_suffix(".bin").read_bytes())
    assert not np.array_equal(got, run_file(source, x))


def test_uncompressed_is_what_the_runtime_reads(mlp_external: Path, tmp_path: Path) -> None:
    """compress-to-fp16 = false without `input` takes the runtime route: the IR of Core().read_model(source)."""
    reference = runtime_reference(mlp_external, tmp_path)
    with convert_to_ir(mlp_external, ConversionOptions(compress_to_fp16=False)) as ir:
        assert same_xml(ir.xml, reference)
        assert ir.bin == reference.with_suffix(".bin").read_bytes()


def test_route_follows_the_options() -> None:
    assert conversion_route(ConversionOptions(compress_to_fp16=False)) == RUNTIME_ROUTE
    assert conversion_route(ConversionOptions()) == OVC_ROUTE  # fp16 weights, the default: byte-identical to ovc
    assert conversion_route(ConversionOptions(compress_to_fp16=False, input="x[1,64]")) == OVC_ROUTE
    assert conversion_route(ConversionOptions(input="x[1,64]")) == OVC_ROUTE


@pytest.fixture(scope="module")
def vision_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The detector and the segmenter of tests/vision_onnx.py, as .onnx files (about 2 MB each)."""
    folder = tmp_path_factory.mktemp("vision")
    return {kind: save_onnx(yolo_graph(segment=kind == "segmenter", seed=2), folder / f"{kind}.onnx")
            for kind in ("detector", "segmenter")}  # fmt: skip


@pytest.mark.parametrize("precision", ["default", "f32"])
@pytest.mark.parametrize("kind", ["detector", "segmenter"])
def test_uncompressed_detectors_and_segmenters_are_bit_identical_to_openvino_reading_the_source(
    kind: str, precision: str, vision_sources: dict[str, Path]
) -> None:
    """Issue 18: ovc's route changed a YOLOv8 detector's boxes by up to 1.0; with compress-to-fp16 = false every
    output must be what compile_model(source) gives, bit for bit, at the CPU's default precision (bf16 where the
    CPU has it) and at f32."""
    source = vision_sources[kind]
    config = {} if precision == "default" else F32
    core = ov.Core()
    x = sample_image()
    expected = [np.asarray(v) for v in core.compile_model(str(source), "CPU", config)(x).values()]
    with convert_to_ir(source, ConversionOptions(compress_to_fp16=False)) as ir:
        model = core.read_model(ir.xml, ov.Tensor(np.frombuffer(ir.bin, np.uint8)))
        got = [np.asarray(v) for v in core.compile_model(model, "CPU", config)(x).values()]
    assert len(got) == len(expected) == (2 if kind == "segmenter" else 1)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.float32
        assert ours.tobytes() == theirs.tobytes(), f"differs by up to {np.abs(ours - theirs).max()}"


def test_ovc_route_changes_these_graphs_numbers(vision_sources: dict[str, Path], tmp_path: Path) -> None:
    """Why the runtime route exists: ovc's IR of the same detector computes other numbers (if a new OpenVINO stops
    doing that, this test says so, and the graphs of tests/vision_onnx.py no longer show the difference)."""
    source = vision_sources["detector"]
    x = sample_image()
    reference = ovc_reference(source, tmp_path, compress=False)
    ovc, own = run_file(reference, x), run_file(source, x)
    assert ovc.tobytes() != own.tobytes()
    assert 0 < np.abs(ovc - own).max() < 1e-3 * np.abs(own).max()  # last bits, not a broken conversion


def test_input_sets_shapes_as_ovc_does(tmp_path: Path) -> None:
    """A dynamic batch made static with input = "x[1,64]", and given a range with "x[1..4,64]"."""
    source = save_onnx(onnx_mlp(2, batch="N"), tmp_path / "dyn.onnx")
    assert ov.Core().read_model(str(source)).input(0).partial_shape.is_dynamic
    x = sample()
    for text, shape in (("x[1,64]", "[1,64]"), ("[1,64]", "[1,64]"), ("x[1..4,64]", "[1..4,64]")):
        with convert_to_ir(source, ConversionOptions(compress_to_fp16=False, input=text)) as ir:
            model = ov.Core().read_model(ir.xml, ov.Tensor(np.frombuffer(ir.bin, np.uint8)))
            assert str(model.input(0).partial_shape) == shape
            assert model.input(0).any_name == "x"
            assert run_ir(ir, x).tobytes() == run_file(source, x).tobytes()
    reference = ovc_reference(source, tmp_path, input=[("x", ov.PartialShape([1, 64]))])
    with convert_to_ir(source, ConversionOptions(input="x[1,64]")) as ir:
        assert same_xml(ir.xml, reference)
        assert ir.bin == reference.with_suffix(".bin").read_bytes()


def test_converted_ir_feeds_the_writer(mlp: Path) -> None:
    with convert_to_ir(mlp, ConversionOptions()) as ir:
        xml_source, bin_source = ir.xml_source(), ir.bin_source()
        assert xml_source.length == len(ir.xml)
        assert bin_source.length == ir.bin_size
        assert b"".join(bytes(c) for c in bin_source.chunks(1000)) == bytes(ir.bin)
        assert ir.bin.readonly


def test_extension_libraries_go_to_convert_model(mlp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that names its library in `_ext_path` (as openvino_tokenizers does) has it given to convert_model."""
    library = tmp_path / "libfake_extension.so"
    library.write_bytes(b"\x7fELF")
    module = types.ModuleType("fake_ov_extension")
    module._ext_path = str(library)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_ov_extension", module)
    seen: dict[str, Any] = {}
    real_convert = ov.convert_model

    def spy(source: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real_convert(source, **{k: v for k, v in kwargs.items() if k != "extension"})

    monkeypatch.setattr(ov, "convert_model", spy)
    with convert_to_ir(mlp, ConversionOptions(), extensions=["json", "fake_ov_extension"]) as ir:
        assert ir.bin_size
    assert seen == {"extension": [str(library)]}


def test_extension_libraries_go_to_the_runtime_core(
    mlp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the runtime route the library named in `_ext_path` is added to the Core that reads the source."""
    library = tmp_path / "libfake_extension.so"
    library.write_bytes(b"\x7fELF")
    module = types.ModuleType("fake_ov_extension")
    module._ext_path = str(library)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_ov_extension", module)
    added: list[str] = []

    class SpyCore(ov.Core):  # type: ignore[misc]
        def add_extension(self, extension: Any) -> None:
            added.append(extension)

    monkeypatch.setattr(ov, "Core", SpyCore)
    with convert_to_ir(mlp, ConversionOptions(compress_to_fp16=False), extensions=["fake_ov_extension"]) as ir:
        assert ir.bin_size
    assert added[-1:] == [str(library)]  # after openvino_tokenizers' library where the build loaded it


def test_extension_modules_are_imported_first(mlp: Path) -> None:
    with convert_to_ir(mlp, ConversionOptions(), extensions=["json"]) as ir:
        assert ir.bin_size
    with pytest.raises(ConversionError, match=r"^extension module 'no_such_ext_mod' cannot be imported: No module"):
        convert_to_ir(mlp, ConversionOptions(), extensions=["no_such_ext_mod"])


# --- what a source is, and which files it reads ----------------------------------------------------------------


def test_is_source() -> None:
    assert not is_source("models/det.xml")
    assert not is_source(Path("models/DET.XML"))
    for path in ("models/det.onnx", "m.tflite", "m.pdmodel", "frozen.pb", "saved_model_dir", "m.h5"):
        assert is_source(path)


def test_source_format(mlp: Path, tflite_model: Path, tmp_path: Path) -> None:
    assert source_format(mlp)[0] == "onnx"
    assert source_format(tflite_model)[0] == "tflite"
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"\x00")
    assert source_format(saved) == ("tf", "TensorFlow SavedModel")
    paddle = tmp_path / "m.pdmodel"
    paddle.write_bytes(b"\x00")
    assert source_format(paddle)[0] == "paddle"
    formats = convert.supported_formats()
    assert any(line.startswith(".onnx:") for line in formats) and any(line.startswith(".tflite:") for line in formats)


def test_source_files_lists_external_data(mlp: Path, mlp_external: Path) -> None:
    assert source_files(mlp) == [mlp.resolve()]
    assert onnx_external_data(mlp) == []
    assert source_files(mlp_external) == [mlp_external.resolve(), (mlp_external.parent / "ext.onnx.data").resolve()]
    assert onnx_external_data(mlp_external) == ["ext.onnx.data"]
    assert onnx_external_data(mlp_external) == onnx_locations(mlp_external)


def onnx_locations(path: Path) -> list[str]:
    """The oracle: external data locations as the `onnx` package reads them."""
    model = onnx.load(str(path), load_external_data=False)
    found: dict[str, None] = {}

    def tensor(t: onnx.TensorProto) -> None:
        if t.data_location == TensorProto.EXTERNAL:
            found.setdefault({e.key: e.value for e in t.external_data}["location"], None)

    def graph(g: onnx.GraphProto) -> None:
        for t in g.initializer:
            tensor(t)
        for s in g.sparse_initializer:
            tensor(s.values)
            tensor(s.indices)
        nodes(g.node)

    def nodes(ns: Any) -> None:
        for n in ns:
            for a in n.attribute:
                if a.HasField("t"):
                    tensor(a.t)
                for t in a.tensors:
                    tensor(t)
                if a.HasField("g"):
                    graph(a.g)
                for g in a.graphs:
                    graph(g)
                if a.HasField("sparse_tensor"):
                    tensor(a.sparse_tensor.values)

    graph(model.graph)
    for f in model.functions:
        nodes(f.node)
    return list(found)


def _external(t: onnx.TensorProto, location: str) -> onnx.TensorProto:
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    t.external_data.add(key="location", value=location)
    t.external_data.add(key="offset", value="0")
    t.ClearField("raw_data")
    return t


def test_external_data_found_everywhere_onnx_allows_it(tmp_path: Path) -> None:
    """Initializers, Constant attributes, If branches (nested), sparse initializers, functions: each file once."""
    rng = np.random.default_rng(3)

    def const(name: str, location: str) -> onnx.NodeProto:
        value = _external(numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), name), location)
        return helper.make_node("Constant", [], [name], value=value)

    def branch(name: str, location: str, inner: onnx.GraphProto | None = None) -> onnx.GraphProto:
        nodes = [const(f"{name}_c", location)]
        if inner is not None:
            nodes.append(helper.make_node("If", ["cond"], [f"{name}_i"], then_branch=inner, else_branch=inner))
        out = helper.make_tensor_value_info(f"{name}_c", TensorProto.FLOAT, [4])
        return helper.make_graph(nodes, name, [], [out])

    init = _external(numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "w"), "a.bin")
    sparse = helper.make_sparse_tensor(
        _external(numpy_helper.from_array(np.ones(2, np.float32), "sv"), "sparse.bin"),
        numpy_helper.from_array(np.array([0, 2], np.int64), "si"),
        [4],
    )
    deep = branch("deep", "deep.bin")
    nodes = [
        const("c0", "b.bin"),
        helper.make_node(
            "If", ["cond"], ["r"], then_branch=branch("t", "then.bin", deep), else_branch=branch("e", "a.bin")
        ),
        helper.make_node("Add", ["w", "c0"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [init], sparse_initializer=[sparse],
    )  # fmt: skip
    function = onnx.FunctionProto(name="f", domain="local", node=[const("fc", "function.bin")], output=["fc"])
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17),
                                                                         helper.make_opsetid("local", 1)])  # fmt: skip
    path = tmp_path / "nested.onnx"
    onnx.save_model(model, str(path))
    expected = ["a.bin", "sparse.bin", "b.bin", "then.bin", "deep.bin", "function.bin"]
    assert sorted(onnx_external_data(path)) == sorted(expected)
    assert sorted(onnx_locations(path)) == sorted(expected)
    for name in expected:
        (tmp_path / name).write_bytes(b"\0" * 16)
    assert set(source_files(path)) == {path.resolve(), *((tmp_path / n).resolve() for n in expected)}


def test_source_files_of_real_sources(paddle_model: Path, frozen_graph: Path, tflite_model: Path) -> None:
    assert source_files(paddle_model) == [paddle_model.resolve(), paddle_model.with_suffix(".pdiparams").resolve()]
    assert source_files(frozen_graph) == [frozen_graph.resolve()]
    assert source_files(tflite_model) == [tflite_model.resolve()]


def test_source_files_of_folders_and_paddle(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    for name in ("saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00001"):
        (saved / name).write_bytes(b"x")
    assert source_files(saved) == [saved.resolve(), *sorted(p.resolve() for p in saved.rglob("*") if p.is_file())]
    paddle = tmp_path / "p" / "inference.pdmodel"
    paddle.parent.mkdir()
    for suffix in (".pdmodel", ".pdiparams", ".pdiparams.info"):
        paddle.with_suffix(suffix).write_bytes(b"x")
    assert source_files(paddle) == [paddle.resolve(), *(paddle.with_suffix(s).resolve()
                                                        for s in (".pdiparams", ".pdiparams.info"))]  # fmt: skip
    meta = tmp_path / "ckpt" / "model.meta"
    meta.parent.mkdir()
    for name in ("model.meta", "model.index", "model.data-00000-of-00001", "checkpoint", "other.index"):
        (meta.parent / name).write_bytes(b"x")
    assert [p.name for p in source_files(meta)] == ["model.meta", "model.data-00000-of-00001", "model.index",
                                                    "checkpoint"]  # fmt: skip


# --- errors, each by its message -------------------------------------------------------------------------------


def test_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ConversionError, match=r"nope\.onnx does not exist$"):
        convert_to_ir(missing, ConversionOptions())
    with pytest.raises(ConversionError, match=r"nope\.onnx does not exist$"):
        source_files(missing)


def test_missing_external_data(mlp_external: Path) -> None:
    (mlp_external.parent / "ext.onnx.data").unlink()
    message = r"ext\.onnx keeps weights in ext\.onnx\.data, which does not exist beside it$"
    with pytest.raises(ConversionError, match=message):
        source_files(mlp_external)
    with pytest.raises(ConversionError, match=message):
        convert_to_ir(mlp_external, ConversionOptions())


def test_external_data_is_looked_for_beside_the_path_given(mlp_external: Path, tmp_path: Path) -> None:
    """As OpenVINO does: a symlinked .onnx finds its data beside the link, not beside the link's target."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ext.onnx").symlink_to(mlp_external)
    with pytest.raises(ConversionError, match=r"elsewhere/ext\.onnx keeps weights in ext\.onnx\.data, which does not"):
        convert_to_ir(elsewhere / "ext.onnx", ConversionOptions())
    (elsewhere / "ext.onnx.data").symlink_to(mlp_external.parent / "ext.onnx.data")
    with pytest.raises(ConversionError, match=r"keeps weights in ext\.onnx\.data, which resolves outside its folder: "
                                              r"OpenVINO refuses that$"):  # fmt: skip
        source_files(elsewhere / "ext.onnx")
    (elsewhere / "ext.onnx.data").unlink()
    (elsewhere / "ext.onnx.data").write_bytes((mlp_external.parent / "ext.onnx.data").read_bytes())
    assert source_files(elsewhere / "ext.onnx") == [mlp_external.resolve(), (elsewhere / "ext.onnx.data").resolve()]
    with convert_to_ir(elsewhere / "ext.onnx", ConversionOptions(compress_to_fp16=False)) as ir:
        assert run_ir(ir, sample()).tobytes() == run_file(mlp_external, sample()).tobytes()


def test_unreadable_sources(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(ConversionError, match=r"garbage\.onnx is not a well-formed ONNX protobuf"):
        convert_to_ir(garbage, ConversionOptions())
    text = tmp_path / "text.onnx"
    text.write_bytes(b"\x0a\x03abc")  # a well-formed protobuf, but not a model OpenVINO can read
    unreadable = r"^OpenVINO cannot convert \S*text\.onnx: it is not readable as ONNX \(corrupt, truncated, or another"
    for options in (ConversionOptions(), ConversionOptions(compress_to_fp16=False)):  # both routes say the same
        with pytest.raises(ConversionError, match=unreadable + r" format\)$") as caught:
            convert_to_ir(text, options)
        assert "\n" not in str(caught.value) and ".cpp:" not in str(caught.value)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ConversionError, match=r"empty\.onnx is empty, so not an ONNX model$"):
        convert_to_ir(empty, ConversionOptions())
    bad_tflite = tmp_path / "bad.tflite"
    bad_tflite.write_bytes(b"\x10\x00\x00\x00TFL3" + os.urandom(64))
    corrupted = r"^OpenVINO cannot convert \S*bad\.tflite: .*TensorFlow Lite Frontend: the model file .* is corrupted"
    for options in (ConversionOptions(), ConversionOptions(compress_to_fp16=False)):
        with pytest.raises(ConversionError, match=corrupted + " or malformed"):
            convert_to_ir(bad_tflite, options)
    assert isinstance(caught.value, OvcryptError)


def test_any_truncation_is_an_error_or_a_listing(mlp_external: Path, tmp_path: Path) -> None:
    """The protobuf walk never fails with anything but ConversionError, wherever the file is cut."""
    data = mlp_external.read_bytes()
    cut = tmp_path / "cut.onnx"
    outcomes = {"error": 0, "listed": 0}
    for size in range(1, len(data)):
        cut.write_bytes(data[:size])
        try:
            found = onnx_external_data(cut)
        except ConversionError as exc:
            assert re.fullmatch(r"\S*cut\.onnx is not a well-formed ONNX protobuf \([^)]+\)", str(exc)), exc
            outcomes["error"] += 1
        else:
            assert set(found) <= {"ext.onnx.data"}
            outcomes["listed"] += 1
    assert outcomes["error"] > len(data) // 2


def test_unsupported_sources(tmp_path: Path) -> None:
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"x")
    with pytest.raises(ConversionError, match=r"model\.h5 is not a model format OpenVINO converts \(it converts "
                                              r"\.onnx, \.tflite, \.pdmodel"):  # fmt: skip
        convert_to_ir(h5, ConversionOptions())
    xml = tmp_path / "model.xml"
    xml.write_bytes(b"<net/>")
    with pytest.raises(ConversionError, match=r"model\.xml is an OpenVINO IR already; only other formats"):
        convert_to_ir(xml, ConversionOptions())
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ConversionError, match=r"folder is a folder without saved_model\.pb or __model__"):
        convert_to_ir(folder, ConversionOptions())


def test_missing_frontend(mlp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(convert, "available_frontends", lambda: frozenset({"ir", "tflite"}))
    with pytest.raises(
        ConversionError, match=r"mlp\.onnx is ONNX .*, but the installed openvino has no 'onnx' frontend"
    ):
        convert_to_ir(mlp, ConversionOptions())


def test_input_that_does_not_fit_the_model(mlp: Path) -> None:
    with pytest.raises(ConversionError, match=r"^OpenVINO cannot convert \S*mlp\.onnx: .*nope") as caught:
        convert_to_ir(mlp, ConversionOptions(input="nope[1,64]"))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConversionError, match=r"^input 'x\(1\)' is not what `ovc --input` accepts: write"):
        convert_to_ir(mlp, ConversionOptions(input="x(1)"))


# --- options as the hook table gives them ----------------------------------------------------------------------


def test_options_defaults() -> None:
    assert parse_conversion_options({"source": "models/rec.onnx"}, AT) == (ConversionOptions(True, None), [])
    options, problems = parse_conversion_options({"compress-to-fp16": False, "input": "x[1,3,48,-1]"}, AT)
    assert (options, problems) == (ConversionOptions(False, "x[1,3,48,-1]"), [])


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"compress-to-fp16": "false"}, "compress-to-fp16", "must be true or false, not 'false'"),
        ({"compress-to-fp16": 0}, "compress-to-fp16", "must be true or false, not 0"),
        ({"input": ["x[1,64]"]}, "input", 'must be a string in `ovc --input` form, such as "x[1,3,48,-1]"'),
        ({"input": ""}, "input", "is empty: leave `input` out to keep the source's own inputs and shapes"),
        ({"input": "x(1,64)"}, "input", "is not what `ovc --input` accepts: write comma-separated input names"),
        ({"input": "x[1,64"}, "input", "is not what `ovc --input` accepts: write comma-separated input names"),
        ({"input": "x[1.5]"}, "input", 'is not what `ovc --input` accepts (Cannot parse dimension: "1.5"): write'),
        ({"input": "x[1][2]"}, "input", "is not what `ovc --input` accepts (Wrong syntax to specify shape."),
        ({"input": "x[1],[2]"}, "input", 'is not what `ovc --input` accepts: "input" parameter has unnamed inputs'),
    ],
)
def test_bad_options(table: dict[str, Any], key: str, message: str) -> None:
    options, problems = parse_conversion_options(table, AT)
    assert options == ConversionOptions()
    assert len(problems) == 1
    path, text = problems[0]
    assert path == f"{AT}.{key}"
    assert text.startswith(message), text
    assert "\n" not in text


def test_every_bad_option_is_reported() -> None:
    _, problems = parse_conversion_options({"compress-to-fp16": "yes", "input": 3}, AT)
    assert [path for path, _ in problems] == [f"{AT}.compress-to-fp16", f"{AT}.input"]


# --- no plaintext IR in a disk-backed file ---------------------------------------------------------------------


def _snapshot(folders: Sequence[Path]) -> dict[Path, tuple[int, int]]:
    found: dict[Path, tuple[int, int]] = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder, onerror=lambda _: None):
            for name in [*files, *dirs]:
                path = Path(root) / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                found[path] = (st.st_mtime_ns, st.st_size)
    return found


def _new_files(before: dict[Path, tuple[int, int]], after: dict[Path, tuple[int, int]]) -> Iterator[Path]:
    for path, stamp in after.items():
        if before.get(path) != stamp and path.is_file() and not path.is_symlink():
            yield path


def _assert_no_leak(ir_bin: bytes, before: dict[Path, tuple[int, int]], folders: Sequence[Path]) -> int:
    """No file that is new (or changed) since `before` holds a 32-byte window of the .bin; returns files scanned."""
    scanner = LeakScanner({"converted .bin": ir_bin})
    scanned = 0
    for path in _new_files(before, _snapshot(folders)):
        try:
            if path.stat().st_size > 256 << 20:
                continue
            blob = path.read_bytes()
        except OSError:  # another test's file, gone meanwhile, or unreadable
            continue
        scanned += 1
        assert not scanner.leaks_in(blob), f"{path} holds plaintext of the converted IR"
    return scanned


@pytest.mark.parametrize("backing", ["memfd", "tmpfs"])
def test_no_plaintext_ir_on_disk(backing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Convert with the temp folder and /dev/shm watched: nothing new holds the IR, and nothing is left behind.

    Python's temp folder is pointed at a private one too, so "nothing left behind" is exact there even while
    other tests write to the real one; the real one and /dev/shm are scanned for the IR's bytes all the same.
    """
    source = save_onnx(onnx_mlp(8, seed=9), tmp_path / "src" / "big.onnx", external="big.onnx.data")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    watched = [Path(tempfile.gettempdir()), private_tmp]
    if Path("/dev/shm").is_dir():
        watched.append(Path("/dev/shm"))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    if backing == "tmpfs":
        if memory_backed_dir() is None:
            pytest.skip("no tmpfs at /dev/shm")

        def no_memfd(*_: object) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "memfd_create", no_memfd)  # as a kernel without memfd, or a seccomp filter
    before = _snapshot(watched)
    shm_before = set(os.listdir("/dev/shm")) if Path("/dev/shm").is_dir() else set()
    with convert_to_ir(source, ConversionOptions(compress_to_fp16=False)) as ir:
        assert ir.backing == backing
        weights = bytes(ir.bin)
        assert len(weights) > 100_000
        assert list(private_tmp.iterdir()) == []  # nothing left behind, while the IR is still held
        _assert_no_leak(weights, before, watched)
    assert list(private_tmp.iterdir()) == []
    if shm_before or Path("/dev/shm").is_dir():
        assert not {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("ovcrypt-")}
    _assert_no_leak(weights, before, watched)


def test_refuses_without_memory_backed_files(mlp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memfd(*_: object) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    monkeypatch.setattr(_memfiles, "memory_backed_dir", lambda *_: None)
    with pytest.raises(ConversionError, match=r"^the converted IR has no memory-backed file to go to: this system "
                                              r"\(linux\) has neither a usable memfd_create nor a writable tmpfs "
                                              r"at /dev/shm, .*; convert it yourself and name the \.xml$"):  # fmt: skip
        convert_to_ir(mlp, ConversionOptions())


def test_memory_backed_dir(tmp_path: Path) -> None:
    if Path("/dev/shm").is_dir():
        assert memory_backed_dir(Path("/dev/shm")) == Path("/dev/shm").resolve()
    assert memory_backed_dir(tmp_path / "missing") is None
    if memory_backed_dir(tmp_path) is not None:
        pytest.skip("the temp folder is itself on tmpfs")
    assert memory_backed_dir(tmp_path) is None


def test_openvino_must_write_through_the_links(mlp: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Were OpenVINO to replace our symlinks with files (write-then-rename), the build stops and wipes them."""
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    real_save = ov.save_model

    def renaming_save(model: Any, path: str, compress_to_fp16: bool = True) -> None:
        Path(path).unlink()
        real_save(model, path, compress_to_fp16=compress_to_fp16)

    monkeypatch.setattr(ov, "save_model", renaming_save)
    with pytest.raises(ConversionError, match=r"^OpenVINO did not write the IR through the memory-backed files"):
        convert_to_ir(mlp, ConversionOptions())
    assert list(private_tmp.iterdir()) == []
