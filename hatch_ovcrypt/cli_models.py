"""`compile` (load a model in memory and compile it) and the OpenSSL-recipe verbs, for migration.

`compile` takes a plain IR .xml, a model in this project's format, or a recipe-encrypted pair; it
decrypts into memory with the runtime's own loader and never writes plaintext to disk.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .cli_common import (
    EXIT_OK,
    CheckFailed,
    UsageError,
    VerbFactory,
    add_key_options,
    keys_from_args,
    read_small_file,
)
from .progress import progress_for
from .runtime._errors import KeyFormatError, OvcryptError
from .runtime._openssl import decrypt_openssl_stream, encrypt_openssl_stream, parse_hex16
from .runtime._spec import Role

if TYPE_CHECKING:
    import openvino as ov


def _openvino_error(exc: Exception) -> CheckFailed:
    from .checks import openvino_message

    return CheckFailed(openvino_message(exc))


RECIPE_HINT = "if it was encrypted with the OpenSSL recipe, pass --openssl-key-hex-file and --openssl-iv-hex-file"


def check_ir_xml(path: Path, hint: str = RECIPE_HINT) -> None:
    """Refuse what is not IR XML before OpenVINO tries every frontend on it (and logs noise doing so)."""
    from .runtime._openssl import looks_like_xml

    with path.open("rb") as f:
        head = f.read(64)
    if not looks_like_xml(head):
        raise CheckFailed(f"{path} is not OpenVINO IR XML; {hint}")


def _hex16(path_text: str, flag: str) -> bytes:
    try:
        return parse_hex16(read_small_file(path_text, flag), f"{flag} {path_text}")
    except KeyFormatError as exc:  # a malformed key or IV file is bad usage, like a malformed --key-file
        raise UsageError(str(exc)) from None


def _read_ovc(core: ov.Core, xml_path: Path, args: argparse.Namespace) -> ov.Model:
    from .cli_files import header_of
    from .runtime._loader import decrypt_file, model_from_memory
    from .runtime._manifest import encrypted_file_name

    keys = keys_from_args(args)
    header = header_of(xml_path)
    if header.role != Role.XML:
        raise UsageError(
            f"{xml_path} holds the {header.role.label} of model {header.name!r}; pass its "
            f"{encrypted_file_name(header.name, Role.XML)}"
        )
    bin_path = xml_path.with_name(encrypted_file_name(header.name, Role.BIN))
    if not bin_path.is_file():
        raise CheckFailed(f"{bin_path} is missing: the .bin.ovc must sit beside the .xml.ovc")
    with bin_path.open("rb") as f:
        weights = decrypt_file(f, str(bin_path), keys.key_for, name=header.name, role=Role.BIN)
    with xml_path.open("rb") as f:
        xml = decrypt_file(f, str(xml_path), keys.key_for, name=header.name, role=Role.XML)
    return model_from_memory(core, xml, weights)


def _read_model(core: ov.Core, path: Path, args: argparse.Namespace) -> ov.Model:
    recipe = (args.openssl_key_hex_file, args.openssl_iv_hex_file)
    if any(recipe) and not all(recipe):
        raise UsageError("an OpenSSL-recipe model needs both --openssl-key-hex-file and --openssl-iv-hex-file")
    if path.name.endswith(".ovc"):
        if any(recipe):
            raise UsageError(f"{path} is in hatch-ovcrypt's format; the --openssl-* options are for recipe files")
        return _read_ovc(core, path, args)
    if path.suffix != ".xml":
        raise UsageError(f"{path} is neither an IR .xml nor an encrypted .xml.ovc")
    if all(recipe):
        from .runtime._openssl import load_openssl_model

        key = _hex16(args.openssl_key_hex_file, "--openssl-key-hex-file")
        iv = _hex16(args.openssl_iv_hex_file, "--openssl-iv-hex-file")
        return load_openssl_model(path, key, iv, core=core)
    check_ir_xml(path)
    return core.read_model(str(path))


def _port_line(kind: str, port: Any) -> str:
    names = ", ".join(sorted(port.get_names())) or "(unnamed)"
    return f"  {kind:<7} {names:<24} {port.get_element_type().get_type_name():<6} {port.get_partial_shape()}"


def cmd_compile(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if not path.is_file():
        raise UsageError(f"{path} is not a file" if path.exists() else f"{path} does not exist")
    import openvino as ov

    start = time.perf_counter()
    core = ov.Core()
    try:
        model = _read_model(core, path, args)
        loaded = time.perf_counter()
        compiled = core.compile_model(model, args.device)
    except (OvcryptError, CheckFailed, UsageError, OSError):
        raise
    except Exception as exc:  # OpenVINO raises RuntimeError (and others) for unreadable IR or a bad device
        raise _openvino_error(exc) from None
    done = time.perf_counter()
    print(f"{path}: compiled model {model.get_friendly_name()!r} on {args.device}")
    for port in compiled.inputs:
        print(_port_line("input", port))
    for port in compiled.outputs:
        print(_port_line("output", port))
    print(f"took {done - start:.3f} s (read and decrypt {loaded - start:.3f} s, compile {done - loaded:.3f} s)")
    return EXIT_OK


def cmd_openssl(args: argparse.Namespace) -> int:
    from .runtime._atomic import atomic_writer

    key = _hex16(args.key_hex_file, "--key-hex-file")
    iv = _hex16(args.iv_hex_file, "--iv-hex-file")
    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise UsageError(f"{src} does not exist")
    with atomic_writer(dst) as f:  # written whole or not at all: bad padding leaves no partial output
        out = _Progress(f, progress_for(f"{args.verb} {src.name}", src.stat().st_size))
        if args.verb == "openssl-encrypt":
            with src.open("rb") as plain:
                encrypt_openssl_stream(plain, out, key, iv)
        else:
            decrypt_openssl_stream(src, out, key, iv)
    return EXIT_OK


class _Progress:
    """A writer that reports bytes written, for the progress line on a terminal."""

    def __init__(self, f: BinaryIO, report: Callable[[int], None] | None) -> None:
        self._f, self._report, self._done = f, report, 0

    def write(self, data: bytes | memoryview) -> int:
        self._done += len(data)
        if self._report:
            self._report(self._done)
        return self._f.write(data)


def register(make: VerbFactory) -> None:
    sub = make(
        "compile", cmd_compile, "decrypt a model in memory, compile it, and print its inputs, outputs and timing"
    )
    sub.add_argument("model", metavar="MODEL", help="an IR .xml, an encrypted <name>.xml.ovc, or a recipe .xml")
    sub.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    sub.add_argument("--openssl-key-hex-file", metavar="F", help="OpenSSL recipe: file holding the hex key")
    sub.add_argument("--openssl-iv-hex-file", metavar="F", help="OpenSSL recipe: file holding the hex IV")
    add_key_options(sub)
    for verb, what in (("openssl-encrypt", "enc -aes-128-cbc"), ("openssl-decrypt", "enc -d -aes-128-cbc")):
        sub = make(verb, cmd_openssl, f"byte-identical to `openssl {what} -K .. -iv ..`, streaming")
        sub.add_argument("input", metavar="IN")
        sub.add_argument("output", metavar="OUT")
        sub.add_argument("--key-hex-file", metavar="F", required=True, help="file holding the key, 32 hex characters")
        sub.add_argument("--iv-hex-file", metavar="F", required=True, help="file holding the IV, 32 hex characters")
