"""The verbs that read and write encrypted files: encrypt, inspect, verify, decrypt.

All of them stream: memory is one segment, whatever the file size. `inspect` needs no key and
imports neither openvino nor cryptography's heavier parts beyond the format module.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from .cli_common import (
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
from .progress import progress_for
from .runtime._errors import ManifestError, OvcryptError
from .runtime._layout import MANIFEST_NAME, MODELS_DIR
from .runtime._loader import KeyLookup, read_locked
from .runtime._manifest import FileEntry, Manifest, is_model_name, parse_manifest
from .runtime._reader import iter_plaintext, read_header
from .runtime._spec import VERSION, Header, Role
from .runtime._writer import FileSource

# What `decrypt` names the plaintext of each role.
PLAIN_SUFFIX = {Role.XML: ".xml", Role.BIN: ".bin", Role.COMPILED: ".blob"}


def cmd_encrypt(args: argparse.Namespace) -> int:
    from .checks import check_model  # the hook's own checks: files present, IR readable by OpenVINO
    from .cli_models import check_ir_xml
    from .config import ModelSpec
    from .writer import encrypt_model

    xml = Path(args.model)
    if xml.suffix != ".xml":
        raise UsageError(f"{xml} is not an IR .xml file (its .bin must sit beside it)")
    name = args.name if args.name is not None else xml.stem
    if not is_model_name(name):
        how = "--name" if args.name is not None else f"the file name {xml.name}"
        raise UsageError(f"model name {name!r} (from {how}) is not a Python identifier; pass --name NAME")
    keys = keys_from_args(args)
    if not xml.is_file():
        raise UsageError(f"{xml} does not exist")
    check_ir_xml(xml, "decrypt a recipe model with `hatch-ovcrypt openssl-decrypt` first, or build it with the hook")
    spec = ModelSpec(name, xml, "none", None, None, str(xml))
    for problem in check_model(spec, Path.cwd(), os.environ, from_sdist=False):
        raise CheckFailed(f"{xml}: {problem.message}")
    out = Path(args.out)
    entries = encrypt_model(keys.first, name, (FileSource(spec.xml), FileSource(spec.bin)), out, progress=progress_for)
    for entry in entries.values():
        print(f"wrote {out / entry.file}, {human_size(entry.size)}")
    print(f"model {name!r} encrypted under key id {keys.ids[0]}")
    return EXIT_OK


def header_of(path: Path) -> Header:
    with path.open("rb") as f:
        header, _, _ = read_header(f, str(path))
    return header


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
    keys = keys_from_args(args)
    failed = 0
    for folder, manifest in packages_of(files).items():
        try:
            check_manifest(folder, manifest, keys.key_for)
        except OvcryptError as exc:
            fail(str(exc))
            failed += 1
        else:
            print(f"ok: {folder / MANIFEST_NAME} (signed under key id {manifest.key_id}, lists every file as it is)")
    for path in files:
        try:
            header = authenticate(path, keys.key_for)
        except OvcryptError as exc:
            fail(str(exc))
            failed += 1
            continue
        print(f"ok: {path} ({header.role.label} of model {header.name!r}, {header.segment_count} segment(s))")
    if failed:
        fail(f"{failed} check(s) failed")
    return EXIT_FAILED if failed else EXIT_OK


def authenticate(path: Path, key_for: KeyLookup) -> Header:
    """Authenticate the header and every segment of one file, streaming; returns its header."""
    with path.open("rb") as f:
        cipher = read_locked(f, str(path), key_for).unlock()
        report = progress_for(f"verifying {path.name}", cipher.header.plaintext_length)
        done = 0
        for segment in iter_plaintext(f, cipher, os.fstat(f.fileno()).st_size):
            done += len(segment)
            if report:
                report(done)
    return cipher.header


def packages_of(files: list[Path]) -> dict[Path, Manifest]:
    """The `_ovcrypt` folders (manifest.json beside models/) whose manifest lists any of these files."""
    packages: dict[Path, Manifest] = {}
    for path in files:
        folder = path.parent.parent
        if path.parent.name != MODELS_DIR or folder in packages or not (folder / MANIFEST_NAME).is_file():
            continue
        manifest = parse_manifest((folder / MANIFEST_NAME).read_bytes())
        if any(entry.file == path.name for model in manifest.models.values() for entry in model.values()):
            packages[folder] = manifest
    return packages


def check_manifest(folder: Path, manifest: Manifest, key_for: KeyLookup) -> None:
    """The manifest's MAC under its key, and every file it lists present with its recorded size and digest."""
    label = str(folder / MANIFEST_NAME)
    manifest.verify(key_for(bytes.fromhex(manifest.key_id), label))
    for entries in manifest.models.values():
        for entry in entries.values():
            path = folder / MODELS_DIR / entry.file
            if not path.is_file():
                raise ManifestError(f"{label}: lists {entry.file}, which is missing from {folder / MODELS_DIR}")
            if file_entry(path) != entry:
                raise ManifestError(f"{label}: {entry.file} is not the file it was signed with (size or SHA-256)")


def file_entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        header, _, _ = read_header(f, path.name)
        f.seek(0)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(path.name, size, digest.hexdigest(), header.salt.hex())


def plain_name(header: Header) -> str:
    return header.name + PLAIN_SUFFIX[header.role]


def cmd_decrypt(args: argparse.Namespace) -> int:
    from .runtime._atomic import atomic_writer

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
    sub = make("encrypt", cmd_encrypt, "encrypt an IR model into this project's format, exactly as the build hook does")
    sub.add_argument("model", metavar="MODEL.xml")
    sub.add_argument("--out", metavar="DIR", required=True, help="writes DIR/<name>.xml.ovc and DIR/<name>.bin.ovc")
    sub.add_argument("--name", metavar="NAME", help="model name (a Python identifier; default: the .xml stem)")
    add_key_options(sub)
    sub = make(
        "inspect", cmd_inspect, "show what encrypted files hold (version, role, model, key id, sizes); needs no key"
    )
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub = make("verify", cmd_verify, "authenticate every segment of encrypted files with the key")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    add_key_options(sub)
    sub = make("decrypt", cmd_decrypt, "export plaintext for debugging (<name>.xml / .bin); never overwrites")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub.add_argument("--out", metavar="DIR", required=True)
    add_key_options(sub)
