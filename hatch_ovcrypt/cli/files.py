"""The verbs that write and read encrypted files: encrypt, inspect, verify, decrypt.

All of them stream: memory is one segment, whatever the file size. `inspect` needs no key and imports
neither openvino nor cryptography.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ovcrypt_runtime._errors import OvcryptError
from ovcrypt_runtime._format.manifest import FOLDER_KINDS, is_model_name, relpath_problem
from ovcrypt_runtime._format.reader import iter_plaintext
from ovcrypt_runtime._format.spec import VERSION, Header, Role
from ovcrypt_runtime._loading.loader import read_locked

from ..hook.progress import progress_for
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    CheckFailed,
    UsageError,
    VerbFactory,
    add_key_options,
    encrypted_files,
    fail,
    human_size,
    keys_from_args,
)
from .package import LEFTOVER, authenticate, header_of, leftover_temporaries, package_folders

RECIPE_FIRST = "decrypt a recipe model with `hatch-ovcrypt openssl-decrypt` first, or build it with the hook"
# What `decrypt` names the plaintext of each role of a single-IR model (a folder's files keep their paths).
PLAIN_SUFFIX = {Role.XML: ".xml", Role.BIN: ".bin", Role.COMPILED: ".blob", Role.DATA: ""}


def cmd_encrypt(args: argparse.Namespace) -> int:
    from ..checks.models import check_model, load_extensions
    from ..config import CONVERT, FOLDER, IR, ModelSpec
    from ..hook.writer import encrypt_model
    from ..sources.models import model_sources

    source = Path(args.model)
    origin = IR if source.suffix == ".xml" else FOLDER if source.is_dir() else CONVERT
    name = args.name if args.name is not None else (source.name if origin == FOLDER else source.stem)
    if not is_model_name(name):
        how = "--name" if args.name is not None else f"the file name {source.name}"
        raise UsageError(f"model name {name!r} (from {how}) is not a Python identifier; pass --name NAME")
    if args.kind is not None and origin != FOLDER:
        raise UsageError("--kind applies to a model folder only")
    keys = keys_from_args(args)
    if not source.exists():
        raise UsageError(f"{source} does not exist")
    if origin == IR:
        check_ir_xml(source, RECIPE_FIRST)
    for problem in load_extensions(args.extension or []):
        raise UsageError(f"--extension {problem}")
    spec = ModelSpec(name, source, str(source), origin, kind=args.kind)
    plan, problems = check_model(spec, Path.cwd(), os.environ, from_sdist=False)
    if plan is None:
        raise CheckFailed(f"{source}: {problems[0].message}")
    out = Path(args.out)
    sources = model_sources(spec, os.environ, plan.converted)
    model = encrypt_model(keys.first, name, plan.kind, sources, out, progress=progress_for)
    for entry in model.files.values():
        print(f"wrote {out / entry.file}, {human_size(entry.size)}")
    print(f"model {name!r} ({plan.kind}, {len(model.files)} file(s)) encrypted under key id {keys.ids[0]}")
    return EXIT_OK


def check_ir_xml(path: Path, hint: str) -> None:
    """Refuse what is not IR XML before OpenVINO tries every frontend on it (and logs noise doing so)."""
    from ovcrypt_runtime._loading.openssl import looks_like_xml

    with path.open("rb") as f:
        head = f.read(64)
    if not looks_like_xml(head):
        raise CheckFailed(f"{path} is not OpenVINO IR XML; {hint}")


def cmd_inspect(args: argparse.Namespace) -> int:
    failed = 0
    for i, path in enumerate(encrypted_files(args.paths)):
        try:
            header = header_of(path)
        except OvcryptError as exc:
            fail(str(exc))
            failed += 1
            continue
        size = path.stat().st_size
        size_note = "" if size == header.file_size else f"  (expected {header.file_size:,}: truncated or extended)"
        if i:
            print()
        print(path)
        for label, value in (
            ("format version", str(VERSION)),
            ("role", header.role.label),
            ("model name", header.name),
            ("key id", header.key_id_hex),
            ("segment size", human_size(header.segment_size)),
            ("segments", str(header.segment_count)),
            ("plaintext size", human_size(header.plaintext_length)),
            ("file size", human_size(size) + size_note),
        ):
            print(f"  {label:<15} {value}")
        failed += bool(size_note)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    files = encrypted_files(args.paths)
    publisher_keys = read_publisher_keys(args.publisher_key or [])
    keys = keys_from_args(args)
    failed = 0
    folders = package_folders(files)
    for folder in folders.values():
        problems = folder.problems(keys.key_for)  # every one of them, not only the first
        pinned = publisher_keys or folder.pinned_keys()
        if pinned:
            try:
                folder.verify_signature(pinned)
            except OvcryptError as exc:
                problems.insert(0, exc)
        for problem in problems:
            fail(str(problem))
        failed += len(problems)
        if not problems:
            by = f", and by its publisher ({len(pinned)} key(s) checked)" if pinned else ""
            kid = folder.manifest.key_id
            print(f"ok: {folder.label} (signed under key id {kid}{by}, lists every file as it is)")
    for path in files:
        try:
            header = authenticate(path, keys.key_for)
        except OvcryptError as exc:
            fail(str(exc))
            failed += 1
            continue
        print(f"ok: {path} ({header.role.label} of model {header.name!r}, {header.segment_count} segment(s))")
    for leftover in leftover_temporaries(files, folders.values()):
        fail(f"{leftover}: {LEFTOVER}; delete it, or run the rekey again (it removes such files)")
        failed += 1
    if failed:
        fail(f"{failed} check(s) failed")
    return EXIT_FAILED if failed else EXIT_OK


def read_publisher_keys(paths: list[str]) -> tuple[str, ...]:
    """`--publisher-key` files, as PEM text, each checked to be an ECDSA P-256 public key (UsageError)."""
    from ovcrypt_runtime._keys.signature import load_public_key

    pems = []
    for name in paths:
        try:
            pem = Path(name).read_text("ascii")
            load_public_key(pem, f"--publisher-key {name}")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--publisher-key {name}: cannot be read ({exc})") from None
        except OvcryptError as exc:
            raise UsageError(str(exc)) from None
        pems.append(pem)
    return tuple(pems)


def plain_name(header: Header) -> str:
    """Where `decrypt` writes a file: `<model>.xml`/`.bin` for a single IR, `<model>/<path>` for a folder's file."""
    model, _, relpath = header.name.partition("/")
    if not relpath:
        return header.name + PLAIN_SUFFIX[header.role]
    if not is_model_name(model) or relpath_problem(relpath):
        raise CheckFailed(f"model name {header.name!r} in the header is not a model file path")
    return header.name


def cmd_decrypt(args: argparse.Namespace) -> int:
    from ovcrypt_runtime._format.atomic import atomic_writer

    files = encrypted_files(args.paths)
    keys = keys_from_args(args)
    out = Path(args.out)
    plan: dict[Path, Path] = {}
    for path in files:  # every check first, so a refusal writes nothing at all
        target = out / plain_name(header_of(path))
        if target in plan.values():
            raise UsageError(f"{path} and {next(p for p, t in plan.items() if t == target)} would both write {target}")
        if target.exists():
            raise UsageError(f"{target} exists; refusing to overwrite (choose another --out)")
        plan[path] = target
    for path, target in plan.items():
        with path.open("rb") as f:
            cipher = read_locked(f, str(path), keys.key_for).unlock()
            report = progress_for(f"decrypting {path.name}", cipher.header.plaintext_length)
            done = 0
            with atomic_writer(target) as dst:  # mode 0600; renamed into place only once all of it authenticated
                for segment in iter_plaintext(f, cipher, os.fstat(f.fileno()).st_size):
                    dst.write(segment)
                    done += len(segment)
                    if report:
                        report(done)
        print(f"wrote {target}, {human_size(cipher.header.plaintext_length)}")
    print(f"{len(plan)} file(s) decrypted to {out}: plaintext on disk, delete it when done", file=sys.stderr)
    return EXIT_OK


def register(make: VerbFactory) -> None:
    """Add this module's verbs to the parser."""
    sub = make("encrypt", cmd_encrypt, "encrypt a model into this project's format, exactly as the build hook does")
    sub.add_argument(
        "model", metavar="MODEL", help="an IR .xml (its .bin beside it), an exported model folder, or a file to convert"
    )
    sub.add_argument(
        "--out", metavar="DIR", required=True, help="writes DIR/<name>.xml.ovc and .bin.ovc, or DIR/<name>/<path>.ovc"
    )
    sub.add_argument("--name", metavar="NAME", help="model name, an identifier (default: the file or folder name)")
    sub.add_argument("--kind", choices=FOLDER_KINDS, help="a folder's kind (default: detected from its files)")
    sub.add_argument(
        "--extension", action="append", metavar="MODULE", help="module to import before reading IRs (repeatable)"
    )
    add_key_options(sub)
    sub = make(
        "inspect", cmd_inspect, "show what encrypted files hold (version, role, model, key id, sizes); needs no key"
    )
    sub.add_argument("paths", nargs="+", metavar="PATH", help="encrypted files, or folders holding them")
    sub = make("verify", cmd_verify, "authenticate every segment of encrypted files (and their manifest) with the key")
    sub.add_argument("paths", nargs="+", metavar="PATH", help="encrypted files, or folders holding them")
    sub.add_argument(
        "--publisher-key", action="append", metavar="PEM",
        help="check each package's model.sig under this public key (repeatable; default: the keys the package pins)",
    )  # fmt: skip
    add_key_options(sub)
    sub = make("decrypt", cmd_decrypt, "export plaintext for debugging (<name>.xml / .bin); never overwrites")
    sub.add_argument("paths", nargs="+", metavar="PATH", help="encrypted files, or folders holding them")
    sub.add_argument("--out", metavar="DIR", required=True, help="folder to write the plaintext into")
    add_key_options(sub)
