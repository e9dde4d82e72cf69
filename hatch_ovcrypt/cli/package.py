"""Encrypted files and the `_ovcrypt` folders that hold them, as the verbs see them.

A file inside `<_ovcrypt>/models/` belongs to that folder's signed manifest: `verify` and `rekey` check
the manifest's MAC and then every file against its entry (size, SHA-256, header salt) before they
trust or write anything, so a file rolled back to another release is named, never re-signed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ovcrypt_runtime._errors import ManifestError, OvcryptError
from ovcrypt_runtime._format.atomic import temporary_target
from ovcrypt_runtime._format.layout import MANIFEST_NAME, MODELS_DIR, SIGNATURE_NAME
from ovcrypt_runtime._format.manifest import FileEntry, FileIdentity, Manifest, file_identity, parse_manifest
from ovcrypt_runtime._format.reader import iter_plaintext, read_header
from ovcrypt_runtime._format.spec import SALT_SIZE, Header, derive_salt, forget_keys, key_id
from ovcrypt_runtime._loading.loader import KeyLookup, read_locked

from ..hook.progress import progress_for
from .common import ENCRYPTED_SUFFIX


def header_of(path: Path) -> Header:
    with path.open("rb") as f:
        header, _, _ = read_header(f, str(path))
    return header


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


def file_entry(path: Path, file: str) -> FileEntry:
    """What the manifest records of an encrypted file: its size, SHA-256 and header salt."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        header, _, _ = read_header(f, path.name)
        f.seek(0)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(file, size, digest.hexdigest(), header.salt.hex())


@dataclass(frozen=True)
class PackageFolder:
    """An `_ovcrypt` folder: its manifest (parsed, not yet authenticated) beside `models/`."""

    root: Path
    manifest: Manifest

    @property
    def label(self) -> str:
        return str(self.root / MANIFEST_NAME)

    def files(self) -> Iterator[tuple[str, str, FileEntry, FileIdentity]]:
        """(model, relative path, entry, identity) for every file the manifest lists."""
        for model, entry in sorted(self.manifest.models.items()):
            for relpath, file in sorted(entry.files.items()):
                yield model, relpath, file, file_identity(model, entry.kind, relpath)

    def path(self, identity: FileIdentity) -> Path:
        return self.root / MODELS_DIR / identity.file

    def pinned_keys(self) -> tuple[str, ...]:
        """The publisher keys this folder's runtime pins (its generated `_settings.py`), or () when none."""
        return pinned_keys(self.root / "_settings.py")

    def verify_signature(self, publisher_keys: tuple[str, ...]) -> None:
        """The folder's model.sig verifies under one of `publisher_keys` and signs this manifest (SignatureError);
        with problems() (every file against the manifest), this authenticates every file."""
        from ovcrypt_runtime._keys.signature import verify_signature

        signature = self.root / SIGNATURE_NAME
        verify_signature(
            signature.read_bytes() if signature.is_file() else None,
            (self.root / MANIFEST_NAME).read_bytes(), publisher_keys, str(self.root),
        )  # fmt: skip

    @forget_keys
    def check(self, key_for: KeyLookup, new_key: bytes | None = None) -> None:
        """Raise the first of problems() (naming how many more there are), or return when there is none."""
        found = self.problems(key_for, new_key)
        if found:
            more = f" (and {len(found) - 1} more problem(s): `hatch-ovcrypt verify` lists them)" if found[1:] else ""
            raise type(found[0])(f"{found[0]}{more}")

    @forget_keys
    def problems(self, key_for: KeyLookup, new_key: bytes | None = None) -> list[OvcryptError]:
        """Every way this folder differs from what it was signed as, each an error to report; empty when none.

        The manifest's MAC under its key (or why that key is not at hand), then every file it lists: present,
        regular, and exactly the file it was signed with (size, SHA-256, header salt); and every encrypted file
        under models/ that it does not list. Each file is compared
        even when the MAC failed, so one run names every damaged or missing file.

        With `new_key` (an interrupted rekey being run again), a file already under that key passes when its
        plaintext is exactly the one signed: the salt recorded for it is recomputed from that plaintext.
        """
        found: list[OvcryptError] = []
        manifest_key = None
        try:
            manifest_key = key_for(bytes.fromhex(self.manifest.key_id), self.label)
            self.manifest.verify(manifest_key)
        except OvcryptError as exc:
            found.append(exc.with_traceback(None))  # kept for its message: not its frames, which held the key
        listed = set()
        for _, _, entry, identity in self.files():
            listed.add(self.path(identity))
            try:
                self._check_file(entry, identity, manifest_key, new_key)
            except OvcryptError as exc:
                found.append(exc.with_traceback(None))
        models = self.root / MODELS_DIR
        for path in sorted(set(models.rglob(f"*{ENCRYPTED_SUFFIX}")) - listed):  # the runtime never reads these
            found.append(ManifestError(
                f"{self.label}: {path.relative_to(models)} is not in the manifest, so the runtime never reads it; "
                "remove it, or rebuild"
            ))  # fmt: skip
        return found

    @forget_keys
    def _check_file(self, entry: FileEntry, identity: FileIdentity, manifest_key: bytes | None,
                    new_key: bytes | None) -> None:  # fmt: skip
        path = self.path(identity)
        if path.is_symlink() or not path.is_file():
            raise ManifestError(f"{self.label}: lists {identity.file}, which is missing from {path.parent}")
        if (new_key is not None and manifest_key is not None and new_key != manifest_key
                and header_of(path).key_id == key_id(new_key)):  # fmt: skip
            if _signed_salt(path, new_key, manifest_key) != entry.salt:
                raise ManifestError(f"{self.label}: {identity.file} is not the file it was signed with (salt "
                                    "differs); it was replaced or rolled back: restore it, or rebuild")  # fmt: skip
            return
        actual = file_entry(path, identity.file)
        if actual != entry:
            what = [f for f in ("size", "sha256", "salt") if getattr(actual, f) != getattr(entry, f)]
            raise ManifestError(
                f"{self.label}: {identity.file} is not the file it was signed with ({', '.join(what)} differ); "
                "it was replaced or rolled back: restore it from the release, or rebuild"
            )


def _signed_salt(path: Path, key: bytes, signed_under: bytes) -> str:
    """The salt the writer derives for this file's plaintext under `signed_under` (docs/FORMAT.md §2), the file
    being under `key`: what the manifest recorded before a rekey moved it to `key`."""
    from ovcrypt_runtime._format.reader import DecryptingSource
    from ovcrypt_runtime._format.writer import plaintext_fingerprint

    with path.open("rb") as f:
        cipher = read_locked(f, str(path), lambda _kid, _label: key).unlock()
    header = cipher.header
    fields = Header(
        header.role, header.name, header.segment_size, header.plaintext_length, key_id(signed_under), bytes(SALT_SIZE)
    )
    fingerprint = plaintext_fingerprint(signed_under, DecryptingSource(path, cipher), header.segment_size)
    return derive_salt(signed_under, fields.fields(), fingerprint).hex()


def pinned_keys(settings: Path) -> tuple[str, ...]:
    """PUBLISHER_KEYS of a generated `_settings.py`, read as a literal (never imported); () when absent."""
    from ..hook.writer import settings_values

    try:
        found = settings_values(settings.read_text("utf-8"), {"PUBLISHER_KEYS"})
    except (OSError, SyntaxError, ValueError):
        return ()
    keys = found.get("PUBLISHER_KEYS")
    return tuple(str(v) for v in keys) if isinstance(keys, tuple | list) else ()


def package_folder_of(path: Path) -> PackageFolder | None:
    """The `_ovcrypt` folder whose `models/` holds `path`, when there is one with a manifest."""
    for parent in path.resolve().parents:
        if parent.name == MODELS_DIR and (parent.parent / MANIFEST_NAME).is_file():
            root = parent.parent
            return PackageFolder(root, parse_manifest((root / MANIFEST_NAME).read_bytes()))
    return None


def package_folders(files: list[Path]) -> dict[Path, PackageFolder]:
    """The `_ovcrypt` folders that hold any of these files, each once, by root."""
    found: dict[Path, PackageFolder] = {}
    for path in files:
        folder = package_folder_of(path)
        if folder is not None and folder.root not in found:
            listed = {folder.path(identity).resolve() for *_, identity in folder.files()}
            if path.resolve() in listed:
                found[folder.root] = folder
    return found


LEFTOVER = "a temporary file left behind by an interrupted (killed) rekey or encrypt"


def leftover_temporaries(files: Iterable[Path], folders: Iterable[PackageFolder]) -> list[Path]:
    """Temporary files that a killed `rekey` or `encrypt` left beside these encrypted files or manifests.

    Every write goes through atomic_writer, whose temporary file `.<name>.<random>.tmp` is renamed over
    `<name>` when complete and removed on any error; only a killed process leaves one behind. Listed are
    those of an encrypted file or a manifest, in any folder that holds one of `files` or is a package root.
    """
    dirs = {path.parent for path in files} | {folder.root for folder in folders}
    found = []
    for folder in sorted(dirs):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            target = temporary_target(name)
            if target and (target.endswith(ENCRYPTED_SUFFIX) or target == MANIFEST_NAME):
                found.append(folder / name)
    return found


def is_package_folder(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file() and (path / MODELS_DIR).is_dir()
