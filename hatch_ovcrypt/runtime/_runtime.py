"""One package's encrypted models: the manifest, the key ring and the compiled-model cache."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _cache
from ._errors import (
    IntegrityError,
    KeyMissingError,
    ManifestError,
    ModelNotFoundError,
    UnsafeConfigError,
)
from ._keys import KeyRing
from ._layout import CACHE_DIR_ENV, MANIFEST_NAME, MODELS_DIR
from ._loader import decrypt_file, model_from_memory, pin_weights, read_locked
from ._manifest import MODEL_ROLES, FileEntry, Manifest, parse_manifest
from ._spec import Role

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

    import numpy as np
    import openvino as ov

# OpenVINO's own cache writes decrypted weights to disk in plaintext (on CPU, even with its
# cache-encryption callbacks), so these options are refused whatever their spelling.
_UNSAFE_OPTIONS = {"CACHE_DIR", "CACHE_ENCRYPTION_CALLBACKS"}


def config_key(config: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """A hashable, order-independent form of a compile config."""
    if not config:
        return ()
    unsafe = sorted(k for k in config if str(k).upper() in _UNSAFE_OPTIONS)
    if unsafe:
        raise UnsafeConfigError(
            f"compile option {unsafe[0]} is refused: OpenVINO's cache stores decrypted weights on disk in plaintext; "
            f"use compile_model(..., cache_dir=...) or ${CACHE_DIR_ENV} for hatch-ovcrypt's encrypted cache instead"
        )
    return tuple(sorted((str(k), repr(v)) for k, v in config.items()))


class Runtime:
    """The models of one `_ovcrypt` folder. Thread-safe; decrypts nothing until asked."""

    def __init__(self, root: Traversable, package: str) -> None:
        self._root = root
        self.package = package
        self._lock = threading.Lock()
        self._manifest: Manifest | None = None
        self._keyring: KeyRing | None = None
        self._verified = False
        self._core: ov.Core | None = None
        self._compiled: dict[tuple[Any, ...], ov.CompiledModel] = {}
        self._compile_locks: dict[tuple[Any, ...], threading.Lock] = {}

    def __repr__(self) -> str:
        return f"<hatch-ovcrypt runtime for {self.package!r}>"

    # --- manifest and keys ---------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        with self._lock:
            if self._manifest is None:
                resource = self._root / MANIFEST_NAME
                if not resource.is_file():
                    raise ManifestError(f"{self.package}: {MANIFEST_NAME} is missing; reinstall the package")
                self._manifest = parse_manifest(resource.read_bytes())
            return self._manifest

    @property
    def keyring(self) -> KeyRing:
        manifest = self.manifest
        with self._lock:
            if self._keyring is None:
                self._keyring = KeyRing(manifest.key_env, _import_provider(manifest.key_provider))
            return self._keyring

    def _key_for(self, wanted: bytes, label: str) -> bytes:
        manifest = self.manifest
        if wanted.hex() != manifest.key_id:
            raise IntegrityError(
                f"{label}: encrypted under key id {wanted.hex()}, but this package was built under "
                f"{manifest.key_id}; the file comes from another build"
            )
        key = self.keyring.key_for(wanted, label)
        if not self._verified:
            manifest.verify(key)
            self._verified = True
        return key

    # --- models --------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(self.manifest.models)

    def _entries(self, name: str) -> dict[Role, FileEntry]:
        """The manifest's entries for a model's files, or ModelNotFoundError."""
        models = self.manifest.models
        if name not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ModelNotFoundError(f"{self.package} has no model {name!r} (models: {known})")
        return models[name]

    def _resource(self, name: str, role: Role) -> tuple[Traversable, str, bytes]:
        """The model file, a label for messages, and the header salt the signed manifest expects of it."""
        entry = self._entries(name)[role]
        folder = self._root / MODELS_DIR
        resource = folder / entry.file
        label = f"model {name!r} file {entry.file}"
        # The manifest cannot name another folder; a symlink could still lead outside the package.
        if isinstance(resource, Path) and isinstance(folder, Path) and (folder.is_symlink() or resource.is_symlink()):
            raise ManifestError(f"{label}: is a symbolic link; encrypted files must be regular files in the package")
        if not resource.is_file():
            raise IntegrityError(f"{label}: is missing from the package; reinstall it")
        return resource, label, bytes.fromhex(entry.salt)

    def _check_files(self, name: str) -> None:
        """Authenticate both headers of a model against the signed manifest, without decrypting.

        A few hundred bytes per file: cheap enough for every warm start from the compiled-model cache.
        """
        for role in MODEL_ROLES:
            resource, label, salt = self._resource(name, role)
            with resource.open("rb") as f:
                read_locked(f, label, self._key_for, name=name, role=role, salt=salt).unlock()

    def decrypt(self, name: str, role: Role) -> np.ndarray:
        resource, label, salt = self._resource(name, role)
        with resource.open("rb") as f:
            return decrypt_file(f, label, self._key_for, name=name, role=role, salt=salt)

    @property
    def core(self) -> ov.Core:
        import openvino as ov

        with self._lock:
            if self._core is None:
                self._core = ov.Core()
            return self._core

    def read_model(self, name: str) -> ov.Model:
        # Weights first: a process's first load imports cryptography while the weights are being read.
        weights = self.decrypt(name, Role.BIN)
        xml = self.decrypt(name, Role.XML)
        return model_from_memory(self.core, xml, weights)

    def compile_model(
        self, name: str, device: str = "CPU", config: dict[str, Any] | None = None, cache_dir: str | Path | None = None
    ) -> ov.CompiledModel:
        key = (name, device, config_key(config), str(cache_dir) if cache_dir else None)
        with self._lock:
            if key in self._compiled:
                return self._compiled[key]
            lock = self._compile_locks.setdefault(key, threading.Lock())
        with lock:  # concurrent callers of the same model wait for one compile
            with self._lock:
                if key in self._compiled:
                    return self._compiled[key]
            compiled = self._compile(name, device, dict(config or {}), cache_dir)
            with self._lock:
                self._compiled[key] = compiled
            return compiled

    def _compile(
        self, name: str, device: str, config: dict[str, Any], cache_dir: str | Path | None = None
    ) -> ov.CompiledModel:
        folder = cache_dir or os.environ.get(CACHE_DIR_ENV) or None
        entry = self._cache_entry(name, device, config, Path(folder)) if folder else None
        if entry is not None:
            compiled = _cache.load(entry[0], entry[1], entry[0].stem, self.core, device, config)
            if compiled is not None:
                # A warm cache must not hide a replaced or missing model file. Checked after the entry
                # is loaded, so that loading it (not this check) is what first imports cryptography,
                # overlapping the read when the entry comes from the disk; it is never returned unchecked.
                self._check_files(name)
                return compiled
        plugin = _load_plugin_meanwhile(self.core, device)
        try:
            model = self.read_model(name)
        finally:
            plugin.join()
        compiled = self.core.compile_model(model, device, config)
        pin_weights(compiled, model._ovcrypt_weights)
        if entry is not None:
            _cache.store(entry[0], entry[1], compiled)
        return compiled

    def _cache_entry(self, name: str, device: str, config: dict[str, Any], folder: Path) -> tuple[Path, bytes]:
        """The encrypted cache file for this compile, and the key it is encrypted under."""
        import openvino as ov

        entries = self._entries(name)
        kid = bytes.fromhex(self.manifest.key_id)
        key = self._key_for(kid, f"compiled-model cache of {name!r}")
        try:
            device_name = str(self.core.get_property(device, "FULL_DEVICE_NAME"))
        except RuntimeError:  # a virtual device (AUTO, MULTI...) may not report one
            device_name = ""
        digests = [name, *(entries[role].sha256 for role in MODEL_ROLES)]
        entry = _cache.entry_name(kid, digests, device, config_key(config), ov.get_version(), device_name)
        return _cache.entry_path(folder.expanduser(), entry), key

    def unload(self, name: str | None = None) -> None:
        """Forget compiled models (all, or one model's) so their memory can be freed."""
        with self._lock:
            for key in [k for k in self._compiled if name is None or k[0] == name]:
                del self._compiled[key]
                self._compile_locks.pop(key, None)


def _load_plugin_meanwhile(core: ov.Core, device: str) -> threading.Thread:
    """Load the device's OpenVINO plugin on another thread while the weights are read and decrypted.

    From a cold disk, loading the CPU plugin (a 64 MB library) takes 40-60 ms here; plain
    compile_model(path) pays that before it reads any weights, and so did this runtime until the
    load overlapped it: 512 MiB from a cold cache, 7 alternating runs each, median 0.80 s serially
    and 0.62 s overlapped, against 0.55 s for plain OpenVINO. Best effort: an unknown device fails
    here silently and then, with OpenVINO's own message, in compile_model.
    """

    def load() -> None:
        with contextlib.suppress(Exception):  # compile_model reports it
            core.get_versions(device)

    thread = threading.Thread(target=load, name="ovcrypt-plugin", daemon=True)
    thread.start()
    return thread


def _import_provider(ref: str | None) -> Any:
    if ref is None:
        return None
    import importlib

    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyMissingError(
            f"key-provider {ref!r} named in {MANIFEST_NAME} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
