"""Which files and which keys: one package's `_ovcrypt` folder, its signed manifest and its key ring.

This is the only module that turns a (model, relative path) into an encrypted file and decrypts it; what
is built from the plaintext (an OpenVINO model, a GenAI pipeline) is `_runtime`'s and `_genai`'s job.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from .. import _settings
from .._errors import IntegrityError, KeyMissingError, ManifestError, ModelNotFoundError, SignatureError
from .._format.layout import MANIFEST_NAME, MODELS_DIR, SIGNATURE_NAME
from .._format.manifest import FileEntry, FileIdentity, Manifest, ModelEntry, file_identity, parse_manifest
from .._format.spec import forget_keys
from .._keys.sources import KeyLike, KeyRing
from .loader import Locked, check_expected_size, decrypt_locked, read_locked

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

    import numpy as np


class Fillable(Protocol):
    """Where decrypt_to_folder writes: a memory folder (_pipelines/memfiles.py MemoryFolder), named by its shape
    so that loading never imports the pipelines group above it."""

    def fill(self, relpath: str, size: int) -> AbstractContextManager[memoryview]: ...

    def written(self, relpath: str, size: int) -> AbstractContextManager[int]: ...


class Package:
    """The encrypted models of one `_ovcrypt` folder. Thread-safe; reads nothing until asked."""

    def __init__(self, root: Traversable, package: str) -> None:
        self._root = root
        self.package = package
        self._lock = threading.Lock()
        self._manifest: Manifest | None = None
        self._verified = False
        # Which variable and which provider come from the generated settings, never from the manifest.
        provider = _provider_from_settings if _settings.KEY_PROVIDER else None
        self.keyring = KeyRing(_settings.KEY_ENV, provider)

    def __repr__(self) -> str:
        return f"<hatch-ovcrypt models of {self.package!r}>"

    @property
    def manifest(self) -> Manifest:
        with self._lock:
            if self._manifest is None:
                resource = self._root / MANIFEST_NAME
                if not resource.is_file():
                    raise ManifestError(f"{self.package}: {MANIFEST_NAME} is missing; reinstall the package")
                data = resource.read_bytes()
                if _settings.PUBLISHER_KEYS:
                    # Before the manifest is parsed or any key is looked up: only the publisher's folders pass.
                    # Imported here: only products that pin publisher keys ship the verifier.
                    from .._keys import signature as _signature

                    signature = self._root / SIGNATURE_NAME
                    _signature.verify_signature(
                        signature.read_bytes() if signature.is_file() else None,
                        data, _settings.PUBLISHER_KEYS, self.package,
                    )  # fmt: skip
                self._manifest = parse_manifest(data)
            return self._manifest

    @forget_keys
    def key_for(self, wanted: bytes, label: str) -> bytes:
        """The master key of key id `wanted`; on first use, the manifest's MAC is checked under it."""
        manifest = self.manifest
        self._check_key_id(wanted, label)
        key = self.keyring.key_for(wanted, label, manifest.holders, manifest.product)
        if not self._verified:
            manifest.verify(key)
            self._verified = True
        return key

    def _check_key_id(self, key_id: bytes, label: str) -> None:
        if key_id.hex() != self.manifest.key_id:
            raise IntegrityError(
                f"{label}: encrypted under key id {key_id.hex()}, but this package was built under "
                f"{self.manifest.key_id}; the file comes from another build"
            )

    def verify_manifest(self, label: str) -> None:
        """Find the package's key and check the manifest's MAC under it, once (KeyMissingError, WrongKeyError,
        ManifestError)."""
        if not self._verified:
            self.key_for(bytes.fromhex(self.manifest.key_id), label)

    def model(self, name: str) -> ModelEntry:
        """The manifest's entry for a model, or ModelNotFoundError naming the models there are."""
        models = self.manifest.models
        if name not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ModelNotFoundError(f"{self.package} has no model {name!r} (models: {known})")
        return models[name]

    def entry(self, name: str, path: str) -> FileEntry:
        files = self.model(name).files
        if path not in files:
            known = ", ".join(sorted(files))
            raise ModelNotFoundError(f"model {name!r} of {self.package} has no file {path!r} (files: {known})")
        return files[path]

    def _resource(self, name: str, path: str) -> tuple[Traversable, str, FileEntry, FileIdentity]:
        """The encrypted file of one model file, a label for messages, its entry and the identity it must carry."""
        entry = self.entry(name, path)
        identity = file_identity(name, self.model(name).kind, path)
        folder = self._root / MODELS_DIR
        resource: Traversable = folder
        for part in identity.file.split("/"):
            resource = resource / part
        label = f"model {name!r} file {identity.file}"
        # The manifest cannot name another folder; a symlink could still lead outside the package.
        if isinstance(resource, Path) and isinstance(folder, Path) and _has_symlink(folder, resource):
            raise ManifestError(f"{label}: is a symbolic link; encrypted files must be regular files in the package")
        if not resource.is_file():
            raise IntegrityError(f"{label}: is missing from the package; reinstall it")
        return resource, label, entry, identity

    def decrypt(self, name: str, path: str, before_decrypt: Callable[[], None] | None = None) -> np.ndarray:
        """Decrypt one file of a model into a new writable uint8 array that an OpenVINO tensor owns.

        Raises the runtime's errors: ModelNotFoundError, KeyMissingError/WrongKeyError, IntegrityError;
        and whatever `before_decrypt()` raises (decrypt_file).
        """
        if _settings.PUBLISHER_KEYS:
            self._check_signed_digest(name, path)
        with self._open(name, path) as (f, locked, label):
            return decrypt_locked(f, locked, label, bounded=True, before_decrypt=before_decrypt)

    def _check_signed_digest(self, name: str, path: str) -> None:
        """The encrypted file must be byte for byte the one the signed manifest lists (SignatureError), before its
        key is looked up: a holder of the model key can make other ciphertext with the same salt and size."""
        resource, label, entry, _ = self._resource(name, path)
        digest = hashlib.sha256()
        with resource.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != entry.sha256:
            raise SignatureError(
                f"{label}: is not the file the publisher signed (its SHA-256 differs from the signed manifest's); "
                "reinstall the package from the publisher's release"
            )

    def decrypt_to_folder(self, name: str, path: str, folder: Fillable) -> None:
        """Decrypt one file of a model into a new memory file of `folder`, linked as `path`: the plaintext's one
        lasting copy, sealed once complete. Raises as decrypt() does; a failed file is wiped and never linked.
        A real file is decrypted a segment at a time and each authenticated segment written to the memory file
        (MemoryFolder.written: faster than through a mapping, see _format/into_file.py); a stream (a wheel
        imported as a zip) is read into a mapping of it (MemoryFolder.fill, left out of core dumps)."""
        from .._format.into_file import decrypt_into_file
        from .._format.reader import positional_fileno, read_and_decrypt

        if _settings.PUBLISHER_KEYS:
            self._check_signed_digest(name, path)
        with self._open(name, path) as (f, locked, label):
            header, unlock = locked
            if (fd := positional_fileno(f)) is not None:
                with folder.written(path, header.plaintext_length) as out:
                    decrypt_into_file(fd, header, label, unlock, out)
                return
            cipher = unlock()  # a stream (or any file without pread) is read in order, its size checked as it goes
            with folder.fill(path, header.plaintext_length) as view:
                read_and_decrypt(f, header, label, lambda: cipher, view)

    @contextlib.contextmanager
    def _open(self, name: str, path: str) -> Iterator[tuple[IO[bytes], Locked, str]]:
        """One model file, opened and its header read, in the order of docs/FORMAT.md §4 and the C++ reader:
        name, role and salt against its manifest entry; the manifest's key id; the manifest's MAC (standard-
        library HMAC only: no cryptography yet); then the size the signed manifest records, which bounds what a
        forged header can make the loader allocate."""
        resource, label, entry, identity = self._resource(name, path)
        with resource.open("rb") as f:
            locked = read_locked(f, label, self.key_for, name=identity.name, role=identity.role,
                                 salt=bytes.fromhex(entry.salt))  # fmt: skip
            self._check_key_id(locked.header.key_id, label)
            self.verify_manifest(label)
            check_expected_size(locked.header, entry.size, label)
            yield f, locked, label

    def check_files(self, name: str, paths: list[str]) -> None:
        """Authenticate these files' headers against the signed manifest, without decrypting them.

        A few hundred bytes per file: cheap enough for every warm start from the compiled-model cache.
        """
        for path in paths:
            with self._open(name, path) as (_, locked, _label):
                locked.unlock()


def _has_symlink(folder: Path, resource: Path) -> bool:
    """True when the file or any folder between `folder` and it is a symbolic link."""
    path = resource
    while True:
        if path.is_symlink():
            return True
        if path in (folder, path.parent):
            return False
        path = path.parent


def _provider_from_settings(wanted: str) -> KeyLike | None:
    """The key provider that the build rendered into `_settings`, imported on first use only."""
    return _import_provider(_settings.KEY_PROVIDER)(wanted)  # type: ignore[no-any-return]


def _import_provider(ref: str | None) -> Any:
    import importlib

    assert ref is not None
    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyMissingError(
            f"key-provider {ref!r} of this package cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
