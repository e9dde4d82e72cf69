"""The plaintext of each configured model, file by file: what the build encrypts and what must not leak.

Every model becomes a set of files by relative path (ovcrypt_runtime/_format/manifest.py): an IR is `<name>.xml` and
`<name>.bin`, read from disk, decrypted from OpenSSL-recipe files on the fly, or converted in memory
from another format; an exported folder is every file under it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ovcrypt_runtime._errors import KeyMissingError
from ovcrypt_runtime._format.manifest import ir_files, relpath_problem
from ovcrypt_runtime._format.spec import MAX_NAME_BYTES
from ovcrypt_runtime._format.writer import FileSource, PlaintextSource
from ovcrypt_runtime._loading.openssl import OpenSSLSource, check_xml, parse_hex16

from ..config import CONVERT, FOLDER, OPENSSL, ModelSpec, display_path

if TYPE_CHECKING:
    from .convert import ConvertedIR

_REGULAR_ONLY = "folder models hold regular files only"


def folder_listing(folder: Path, name: str) -> tuple[dict[str, Path], list[str]]:
    """Every file under an exported folder by its relative POSIX path, and the problems found.

    Symbolic links, special files and names the manifest cannot carry are problems: a folder model is
    exactly its regular files, so nothing outside it can be pulled into the wheel.
    """
    files: dict[str, Path] = {}
    problems: list[str] = []
    for top, dirs, names in os.walk(folder, followlinks=False):
        here = Path(top)
        for entry in sorted(dirs):
            if (here / entry).is_symlink():
                problems.append(f"{display_path(here / entry, folder)} is a symbolic link; {_REGULAR_ONLY}")
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
        for entry in sorted(names):
            path = here / entry
            relpath = display_path(path, folder)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{relpath} is a symbolic link; {_REGULAR_ONLY}")
            elif not stat.S_ISREG(mode):
                problems.append(f"{relpath} is not a regular file")
            elif why := relpath_problem(relpath):
                problems.append(f"{relpath}: the path {why}")
            elif len(f"{name}/{relpath}".encode()) > MAX_NAME_BYTES:
                problems.append(f"{relpath}: the path is longer than {MAX_NAME_BYTES - len(name) - 1} bytes")
            else:
                files[relpath] = path
    if not files and not problems:
        problems.append("holds no files")
    return files, problems


def recipe_key_iv(spec: ModelSpec, environ: Mapping[str, str]) -> tuple[bytes, bytes]:
    """The OpenSSL recipe's key and IV from the variables the model's table names."""
    values = []
    for env in (spec.key_hex_env, spec.iv_hex_env):
        assert env is not None  # parse_options guarantees both for recipe models
        if not environ.get(env):
            raise KeyMissingError(f"environment variable {env} is not set (the OpenSSL recipe's hex key or IV)")
        values.append(parse_hex16(environ[env], f"environment variable {env}"))
    return values[0], values[1]


def model_sources(
    spec: ModelSpec,
    environ: Mapping[str, str],
    converted: ConvertedIR | None = None,
) -> dict[str, PlaintextSource]:
    """The plaintext of a model, streamed, by relative path: what the writer encrypts.

    `converted` is the in-memory IR of a model given as a file to convert (checks.Plan holds it).
    """
    xml_path, bin_path = ir_files(spec.name)
    if spec.origin == FOLDER:
        files, _ = folder_listing(spec.source, spec.name)
        return {relpath: FileSource(path) for relpath, path in files.items()}
    if spec.origin == CONVERT:
        assert converted is not None, "a converted model's IR comes from the checks"
        return {xml_path: converted.xml_source(), bin_path: converted.bin_source()}
    if spec.origin == OPENSSL:
        key, iv = recipe_key_iv(spec, environ)
        xml = OpenSSLSource(spec.xml, key, iv, spec.xml.name)
        check_xml(next(iter(xml.chunks(64)), b""), spec.xml.name)
        return {xml_path: xml, bin_path: OpenSSLSource(spec.bin, key, iv, spec.bin.name)}
    return {xml_path: FileSource(spec.xml), bin_path: FileSource(spec.bin)}


def plaintext_paths(spec: ModelSpec) -> list[Path]:
    """The files on disk that hold the model (plaintext, or recipe ciphertext): none may reach a wheel or sdist."""
    if spec.origin == FOLDER:
        return sorted(folder_listing(spec.source, spec.name)[0].values()) if spec.source.is_dir() else []
    if spec.origin == CONVERT:
        from .convert import ConversionError, source_files

        try:
            return source_files(spec.source) if spec.source.exists() else []
        except ConversionError:  # unreadable: the checks report it; the file itself still must not leak
            return [spec.source]
    return [path for path in spec.files if path.exists()]
