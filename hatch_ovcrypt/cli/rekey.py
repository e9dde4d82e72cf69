"""`rekey`: re-encrypt files under a new key, atomically, file by file; and re-sign their manifest.

Each file is decrypted segment by segment (DecryptingSource) and written by the build's own
writer to a temporary file beside it, which is renamed over it only once complete, so a failure
leaves the old file untouched. A file already under the new key is skipped, so an interrupted
rekey can simply be run again; the run removes the temporary files that a killed run left behind.

When the files are an installed package's `_ovcrypt` folder, its manifest.json names the key id
and the files' digests, and the runtime refuses files under any other key id; so once every file
the manifest lists is under the new key, the manifest is rewritten and signed under it. A folder whose key its
holders wrap, or that its publisher signed, is refused: only a rebuild can wrap or sign anew. Before anything
is written, the manifest's MAC is checked under the old key and every file against its entry (size,
SHA-256, header salt), so a rekey never launders an edited manifest or a file rolled back to another
release into a validly signed folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ovcrypt_runtime._format.layout import SIGNATURE_NAME
from ovcrypt_runtime._format.manifest import FileEntry, Manifest, ModelEntry
from ovcrypt_runtime._format.reader import DecryptingSource
from ovcrypt_runtime._format.spec import key_id
from ovcrypt_runtime._loading.loader import read_locked

from ..hook.progress import progress_for
from .common import EXIT_OK, Keys, UsageError, VerbFactory, add_key_options, encrypted_files, keys_from_args, load_keys
from .package import LEFTOVER, PackageFolder, file_entry, header_of, leftover_temporaries, package_folders


def cmd_rekey(args: argparse.Namespace) -> int:
    from ..hook.writer import encrypt_file

    files = encrypted_files(args.paths)
    old = keys_from_args(args)
    new = load_keys(args.new_key_file, args.key_env, flag="--new-key-file")
    if len(new.ids) != 1:
        raise UsageError(f"--new-key-file {args.new_key_file} must hold exactly one key, not {len(new.ids)}")
    new_key, new_id = new.first, key_id(new.first)
    packages = package_folders(files)
    for folder in packages.values():  # before anything is written: its own key must vouch for it and every file
        _refuse_what_rekey_would_drop(folder)
        folder.check(_either(old, new_key).key_for, new_key)
    headers = {path: header_of(path) for path in files}
    for path, header in headers.items():  # every key must be at hand before the first file changes
        if header.key_id != new_id:
            old.key_for(header.key_id, str(path))
    for leftover in leftover_temporaries(files, packages.values()):  # a killed run's: never renamed into place
        leftover.unlink(missing_ok=True)
        print(f"removed {leftover}: {LEFTOVER}")
    done = 0
    for path, header in headers.items():
        if header.key_id == new_id:
            print(f"skipped {path}: already under key id {new_id.hex()}")
            continue
        mode = path.stat().st_mode & 0o777
        with path.open("rb") as f:
            cipher = read_locked(f, str(path), old.key_for).unlock()
        source = DecryptingSource(path, cipher)
        encrypt_file(
            new_key, source, path, name=header.name, role=header.role, segment_size=header.segment_size,
            progress=progress_for(f"rekeying {path.name}", header.plaintext_length),
        )  # fmt: skip
        os.chmod(path, mode)  # the temporary file was private; keep the file readable as it was
        done += 1
        print(f"rekeyed {path}: key id {header.key_id_hex} -> {new_id.hex()}")
    for folder in packages.values():
        _resign(folder, new_key)
    print(f"{done} file(s) rekeyed, {len(files) - done} already under the new key", file=sys.stderr)
    return EXIT_OK


def _refuse_what_rekey_would_drop(folder: PackageFolder) -> None:
    """UsageError (one line, before anything is written) for a folder whose manifest names key holders, which
    wrap the old key, or that its publisher signed (model.sig signs the old manifest): a rekeyed folder would
    lose either, and only a rebuild can make them anew for the new key."""
    if folder.manifest.holders:
        raise UsageError(
            f"{folder.label} names key holders, which wrap the old key, so a rekeyed folder would lose them: rebuild "
            "the product with a data-key that wraps the new key (`hatch-ovcrypt datakey new`) instead"
        )
    if folder.pinned_keys() or (folder.root / SIGNATURE_NAME).exists():
        raise UsageError(
            f"{folder.root} is signed by its publisher ({SIGNATURE_NAME} signs the old manifest), so a rekeyed folder "
            "would fail its signature check: rebuild the product with the new key and its signing-key instead"
        )


def _either(old: Keys, new_key: bytes) -> Keys:
    """The old keys and the new one: a folder rekeyed before (an interrupted run) is checked under the new key."""
    return Keys([new_key, *old.all()], f"{old.source} or --new-key-file")


def _resign(folder: PackageFolder, new_key: bytes) -> None:
    from ovcrypt_runtime._format.atomic import atomic_writer

    manifest = folder.manifest
    models: dict[str, dict[str, FileEntry]] = {}
    for model, relpath, _, identity in folder.files():
        path = folder.path(identity)
        if header_of(path).key_id != key_id(new_key):
            sys.stderr.write(
                f"hatch-ovcrypt: warning: {folder.label} left as it was: {path} is not under the new "
                "key yet; rekey the whole folder so the runtime accepts it\n"
            )
            return
        models.setdefault(model, {})[relpath] = file_entry(path, identity.file)
    entries = {name: ModelEntry(manifest.models[name].kind, files) for name, files in models.items()}
    resigned = Manifest(manifest.generator, key_id(new_key).hex(), entries).signed(new_key)
    target = Path(folder.label)
    mode = target.stat().st_mode & 0o777
    with atomic_writer(target) as f:
        f.write(resigned.to_json())
    os.chmod(target, mode)
    print(f"re-signed {target} under key id {resigned.key_id}")


def register(make: VerbFactory) -> None:
    sub = make("rekey", cmd_rekey, "re-encrypt files under a new key, atomically (an _ovcrypt folder's manifest too)")
    sub.add_argument("paths", nargs="+", metavar="PATH", help="encrypted files, or folders holding them")
    sub.add_argument("--new-key-file", metavar="FILE", required=True, help="file holding the one new key")
    add_key_options(sub)
