"""`compile`: load a model in memory, compile it, and print its inputs, outputs and timing.

It takes a plain IR .xml, a model in this project's format (`<name>.xml.ovc`), an OpenSSL-recipe pair, a
package's `_ovcrypt` folder, or an installed product's model as `package:name`. It decrypts into memory
with the runtime's own loader and never writes plaintext to disk.
"""

from __future__ import annotations

import argparse
import importlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovcrypt_runtime._errors import OvcryptError, openvino_message
from ovcrypt_runtime._format.spec import Role

from .common import EXIT_OK, CheckFailed, UsageError, VerbFactory, add_key_options, keys_from_args
from .files import check_ir_xml
from .openssl import hex16_file
from .package import header_of, is_package_folder

if TYPE_CHECKING:
    import openvino as ov

RECIPE_HINT = "if it was encrypted with the OpenSSL recipe, pass --openssl-key-hex-file and --openssl-iv-hex-file"
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_INSTALLED = re.compile(rf"(?P<package>{_NAME}(?:\.{_NAME})*):(?P<model>{_NAME})\Z")


@dataclass
class _Compiled:
    label: str
    compiled: ov.CompiledModel
    read_seconds: float | None  # None when reading and compiling are one step (the runtime's compile_model)


def _read_ovc(core: ov.Core, xml_path: Path, args: argparse.Namespace) -> ov.Model:
    from ovcrypt_runtime._format.manifest import IR_KIND, file_identity
    from ovcrypt_runtime._loading.loader import decrypt_file, model_from_memory

    keys = keys_from_args(args)
    header = header_of(xml_path)
    if header.role != Role.XML:
        raise UsageError(
            f"{xml_path} holds the {header.role.label} of model {header.name!r}; pass its "
            f"{file_identity(header.name, IR_KIND, header.name + '.xml').file}"
        )
    bin_path = xml_path.with_name(file_identity(header.name, IR_KIND, header.name + ".bin").file)
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
        raise UsageError(f"{path} is neither an IR .xml, an encrypted .xml.ovc, nor an _ovcrypt folder")
    if all(recipe):
        from ovcrypt_runtime._loading.openssl import load_openssl_model

        key = hex16_file(args.openssl_key_hex_file, "--openssl-key-hex-file")
        iv = hex16_file(args.openssl_iv_hex_file, "--openssl-iv-hex-file")
        return load_openssl_model(path, key, iv, core=core)
    check_ir_xml(path, RECIPE_HINT)
    return core.read_model(str(path))


def _from_package_folder(folder: Path, args: argparse.Namespace) -> list[_Compiled]:
    """Every model of an `_ovcrypt` folder (or the one --name names), with the keys the command was given."""
    from ovcrypt_runtime._keys.sources import KeyRing
    from ovcrypt_runtime._loading.runtime import Runtime

    keys = keys_from_args(args)
    runtime = Runtime(folder, folder.parent.name or str(folder))
    runtime.files.keyring = KeyRing(args.key_env)
    for key in keys.all():
        runtime.files.keyring.add(key)
    names = [args.name] if args.name else runtime.model_names()
    return [_compile_with(runtime.compile_model, f"{folder}: model {name!r}", name, args) for name in names]


def _from_installed(package: str, model: str, args: argparse.Namespace) -> _Compiled:
    """A model of an installed product, through that product's own runtime (its key settings and all)."""
    try:
        runtime = importlib.import_module(f"{package}._ovcrypt")
    except ImportError as exc:
        raise UsageError(f"cannot import {package}._ovcrypt ({exc}): is {package} installed here?") from None
    if args.key_file or args.data_key:  # else the product's own key settings (its variable, provider, holders)
        for key in keys_from_args(args).all():
            runtime.set_key(key)
    return _compile_with(runtime.compile_model, f"{package}:{model}", model, args)


def _compile_with(compile_model: Any, label: str, name: str, args: argparse.Namespace) -> _Compiled:
    compiled = compile_model(name, args.device, part=args.part)
    return _Compiled(label, compiled, None)


def _from_file(path: Path, args: argparse.Namespace) -> _Compiled:
    import openvino as ov

    start = time.perf_counter()
    core = ov.Core()
    model = _read_model(core, path, args)
    loaded = time.perf_counter()
    compiled = core.compile_model(model, args.device)
    return _Compiled(f"{path}: model {model.get_friendly_name()!r}", compiled, loaded - start)


def _port_line(kind: str, port: Any) -> str:
    names = ", ".join(sorted(port.get_names())) or "(unnamed)"
    return f"  {kind:<7} {names:<24} {port.get_element_type().get_type_name():<6} {port.get_partial_shape()}"


def cmd_compile(args: argparse.Namespace) -> int:
    path = Path(args.model)
    installed = _INSTALLED.match(args.model) if not path.exists() else None
    if installed is None and not path.exists():
        raise UsageError(f"{path} does not exist (an installed model is named package:model)")
    if (args.name or args.part) and installed is None and not path.is_dir():
        raise UsageError("--name and --part apply to an _ovcrypt folder or package:model")
    start = time.perf_counter()
    try:
        if installed is not None:
            results = [_from_installed(installed["package"], installed["model"], args)]
        elif path.is_dir():
            if not is_package_folder(path):
                raise UsageError(f"{path} is not an _ovcrypt folder (manifest.json beside models/)")
            results = _from_package_folder(path, args)
        else:
            results = [_from_file(path, args)]
    except (OvcryptError, CheckFailed, UsageError, OSError):
        raise
    except Exception as exc:  # OpenVINO raises RuntimeError (and others) for unreadable IR or a bad device
        raise CheckFailed(openvino_message(exc)) from None
    done = time.perf_counter()
    for result in results:
        print(f"{result.label}: compiled on {args.device}")
        for port in result.compiled.inputs:
            print(_port_line("input", port))
        for port in result.compiled.outputs:
            print(_port_line("output", port))
    read = results[0].read_seconds if len(results) == 1 else None
    phases = f" (read and decrypt {read:.3f} s, compile {done - start - read:.3f} s)" if read is not None else ""
    print(f"took {done - start:.3f} s{phases}")
    return EXIT_OK


def register(make: VerbFactory) -> None:
    sub = make(
        "compile", cmd_compile, "decrypt a model in memory, compile it, and print its inputs, outputs and timing"
    )
    sub.add_argument(
        "model",
        metavar="MODEL",
        help="an IR .xml, an encrypted <name>.xml.ovc, a recipe .xml, an _ovcrypt folder, or package:model",
    )
    sub.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    sub.add_argument("--name", metavar="NAME", help="with an _ovcrypt folder: the model to compile (default: all)")
    sub.add_argument("--part", metavar="PART", help="a folder model's IR: its path without .xml (default: the main IR)")
    sub.add_argument("--openssl-key-hex-file", metavar="F", help="OpenSSL recipe: file holding the hex key")
    sub.add_argument("--openssl-iv-hex-file", metavar="F", help="OpenSSL recipe: file holding the hex IV")
    add_key_options(sub)
