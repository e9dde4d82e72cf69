"""What is built from one package's models: OpenVINO models and compiled models, and the compiled-model cache.

Which files and keys a model has is `_package`'s concern; GenAI pipelines are built in `_genai`.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import _settings
from .._errors import (
    DeviceError,
    ModelNotFoundError,
    UnsafeConfigError,
    UnsupportedModelError,
    openvino_message,
    warn_caller,
)
from .._format.layout import CACHE_DIR_ENV
from .._format.manifest import IR_KIND, Part
from .._format.spec import forget_keys
from .loader import model_from_memory, pin_weights
from .package import Package

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

    import numpy as np
    import openvino as ov

    from .._keys.sources import KeyRing

# OpenVINO's own cache writes decrypted weights to disk in plaintext (on CPU, even with its
# cache-encryption callbacks), so these options are refused whatever their spelling or nesting.
_UNSAFE_OPTIONS = {"CACHE_DIR", "CACHE_ENCRYPTION_CALLBACKS"}
# Devices that stand for others (OpenVINO's "meta" devices), and what each takes after the colon.
_VIRTUAL_DEVICES = {"AUTO", "MULTI", "HETERO", "BATCH"}
_EXCLUDING = {"AUTO", "MULTI"}  # "AUTO:-GPU": every device but these
_COUNTED = re.compile(r"\(\d+\)$")  # "MULTI:CPU(2)", "BATCH:CPU(4)": a request count or batch size
# The main IR of a folder model when the caller names no part.
DEFAULT_PARTS = {"llm": "openvino_model"}


def refuse_unsafe_options(options: Mapping[Any, Any] | None, what: str, instead: str) -> None:
    """Raise UnsafeConfigError if `options` sets one of OpenVINO's plaintext cache options, at any depth.

    Device-scoped properties (`DEVICE_PROPERTIES: {"CPU": {"CACHE_DIR": ...}}`, also as an OVAny) turn the
    cache on as well, so nested mappings are searched too. `what` names the options ("compile option"),
    `instead` says what to do.
    """
    for path in _option_paths(options or {}, ()):
        if str(path[-1]).upper() in _UNSAFE_OPTIONS:
            raise UnsafeConfigError(
                f"{what} {'.'.join(map(str, path))} is refused: OpenVINO's cache stores decrypted weights on disk "
                f"in plaintext; {instead}"
            )


def _option_paths(options: Mapping[Any, Any], above: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    for name, value in options.items():
        yield (*above, name)
        inner = getattr(value, "value", None) if type(value).__name__ == "OVAny" else value
        if isinstance(inner, Mapping):
            yield from _option_paths(inner, (*above, name))


def config_key(config: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """A hashable, order-independent form of a compile config; refuses OpenVINO's plaintext cache options."""
    refuse_unsafe_options(
        config, "compile option",
        f"use compile_model(..., cache_dir=...) or ${CACHE_DIR_ENV} for hatch-ovcrypt's encrypted cache instead",
    )  # fmt: skip
    if not config:
        return ()
    return tuple(sorted((str(k), repr(v)) for k, v in config.items()))


class Runtime:
    """The models of one `_ovcrypt` folder. Thread-safe; decrypts nothing until asked."""

    def __init__(self, root: Traversable, package: str) -> None:
        self.files = Package(root, package)
        self.package = package
        self._lock = threading.Lock()
        self._core: ov.Core | None = None
        self._extensions_loaded = False
        self._compiled: dict[tuple[Any, ...], ov.CompiledModel] = {}
        self._compile_locks: dict[tuple[Any, ...], threading.Lock] = {}

    def __repr__(self) -> str:
        return f"<hatch-ovcrypt runtime for {self.package!r}>"

    @property
    def keyring(self) -> KeyRing:
        return self.files.keyring

    def model_names(self) -> list[str]:
        return sorted(self.files.manifest.models)

    @property
    def core(self) -> ov.Core:
        import openvino as ov

        with self._lock:
            if self._core is None:
                self._core = ov.Core()
            return self._core

    # --- files and parts -----------------------------------------------------------------------

    @forget_keys  # plaintext as well as keys: no frame of an error that leaves here holds either
    def read_file(self, name: str, path: str) -> bytes:
        """Any file of a model, decrypted in memory (for a single-IR model: `<name>.xml` or `<name>.bin`)."""
        data = self.files.decrypt(name, path)
        try:
            return data.tobytes()
        finally:
            data.fill(0)

    def part(self, name: str, part: str | None) -> tuple[str, Part]:
        """The IR `part` of a model (its path without `.xml`), or the model's main IR when `part` is None."""
        model = self.files.model(name)
        parts = model.parts(name)
        chosen = part
        if chosen is None:
            chosen = DEFAULT_PARTS.get(model.kind, next(iter(parts)) if len(parts) == 1 else None)
        if chosen is None or chosen not in parts:
            known = ", ".join(sorted(parts)) or "none"
            what = f"has no IR part {chosen!r}" if chosen is not None else "has several IRs: pass part="
            raise ModelNotFoundError(f"model {name!r} of {self.package} {what} (parts: {known})")
        return chosen, parts[chosen]

    def load_extensions(self) -> None:
        """Import the extension modules the build named (openvino_tokenizers for tokenizer IRs), once."""
        if self._extensions_loaded:
            return
        for module in _settings.EXTENSIONS:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise UnsupportedModelError(
                    f"{self.package}'s models need the OpenVINO extension module {module!r}, which cannot be "
                    f"imported ({exc}); install it (pip install {module.replace('_', '-')})"
                ) from None
        self._extensions_loaded = True

    @forget_keys
    def read_model(
        self, name: str, part: str | None = None, *, before_decrypt: Callable[[], None] | None = None
    ) -> ov.Model:
        """Decrypt one IR of a model in memory into an openvino.Model whose weights OpenVINO owns.

        `before_decrypt()` runs before each file's first segment is decrypted, once its key is found;
        an exception it raises fails the load with nothing decrypted.
        """
        self.load_extensions()
        xml, weights = self.decrypt_ir(name, part, before_decrypt)
        return model_from_memory(self.core, xml, weights)

    @forget_keys
    def decrypt_ir(
        self, name: str, part: str | None, before_decrypt: Callable[[], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One IR's (xml, weights), decrypted into memory OpenVINO owns; empty weights for an IR without a .bin."""
        import numpy as np

        _, chosen = self.part(name, part)
        # Weights first: a process's first load imports cryptography while the weights are being read.
        weights = self.files.decrypt(name, chosen.bin, before_decrypt) if chosen.bin else np.zeros(0, np.uint8)
        return self.files.decrypt(name, chosen.xml, before_decrypt), weights

    # --- compiling -----------------------------------------------------------------------------

    @forget_keys
    def compile_model(
        self,
        name: str,
        device: str = "CPU",
        config: dict[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        part: str | None = None,
    ) -> ov.CompiledModel:
        part_name, _ = self.part(name, part)
        key = (name, part_name, device, config_key(config), str(cache_dir) if cache_dir else None)
        with self._lock:
            if key in self._compiled:
                return self._compiled[key]
            lock = self._compile_locks.setdefault(key, threading.Lock())
        with lock:  # concurrent callers of the same model wait for one compile
            with self._lock:
                if key in self._compiled:
                    return self._compiled[key]
            compiled = self._compile(name, part_name, device, dict(config or {}), cache_dir)
            with self._lock:
                self._compiled[key] = compiled
            return compiled

    def check_device(self, device: str) -> None:
        """Refuse a device string OpenVINO would refuse here, before anything is decrypted (DeviceError).

        Names are checked as OpenVINO spells them (case-sensitive: "cpu" is no device): a real device
        ("CPU", "GPU.1") must have a plugin that lists it; a virtual one (AUTO, MULTI, HETERO, BATCH) may
        name devices after a colon, each checked the same way ("AUTO:-GPU" excludes and "MULTI:CPU(2)"
        counts, as OpenVINO reads them). A bare virtual device passes: its config may name the devices.
        Only the named devices' plugins are asked: listing every available device loads every plugin
        (NPU, AUTO, HETERO, BATCH...), which cost 4.9 MiB of peak RSS on a 64 MiB model (smaps).
        """
        problem = self._device_problem(device) if isinstance(device, str) else "a device is a string"
        if problem is None:
            return
        available = list(self.core.available_devices)
        example = available[0] if available else "CPU"
        raise DeviceError(
            f"OpenVINO device {device!r} is not available on this machine ({problem}; available devices: "
            f"{', '.join(available) or 'none'}); pass one of them, for example device={example!r}"
        )

    def _device_problem(self, device: str) -> str | None:
        """Why OpenVINO would refuse `device`, or None."""
        family, colon, listed = device.partition(":")
        if family not in _VIRTUAL_DEVICES:
            if not colon:
                return self._real_device_problem(device)
            if family.upper() in _VIRTUAL_DEVICES:
                return f"OpenVINO has no device {family!r}, names are case-sensitive (did you mean {family.upper()!r}?)"
            return f"only {', '.join(sorted(_VIRTUAL_DEVICES))} take devices after a colon"
        members = [m for m in listed.split(",") if m]
        if family == "BATCH" and colon and len(members) != 1:
            return "BATCH takes exactly one device, as in BATCH:CPU(4)"
        kept = []
        for listed_member in members:
            if family in _EXCLUDING and listed_member.startswith("-"):
                continue
            # HETERO takes no counts; it reads "-GPU" as GPU.
            member = (listed_member if family == "HETERO" else _COUNTED.sub("", listed_member)).lstrip("-")
            inner = member.partition(":")[0]
            if inner in _VIRTUAL_DEVICES and not (family == "BATCH" and member == "AUTO"):
                return f"{family} cannot list the virtual device {inner}"
            problem = self._real_device_problem(member) if inner != "AUTO" else None
            if problem is not None:
                return problem
            kept.append(member)
        if members and not kept:  # only exclusions: something must remain
            excluded = {m[1:] for m in members}
            remaining = [d for d in self.core.available_devices if d not in excluded and
                         d.partition(".")[0] not in excluded]  # fmt: skip
            if not remaining:
                return f"{device} excludes every available device"
        return None

    def _real_device_problem(self, device: str) -> str | None:
        """Why OpenVINO would refuse the real device `device` ("CPU", "GPU", "GPU.1"), or None.

        Asks only that device's plugin for the devices it has (the CPU plugin lists one, with no id).
        """
        family, _, ident = device.partition(".")
        try:
            ids = [str(i) for i in self.core.get_property(family, "AVAILABLE_DEVICES")]
        except RuntimeError:  # no such plugin, or it cannot be loaded here
            cased = family.isalpha() and family.upper() != family
            hint = f" (names are case-sensitive: did you mean {family.upper()!r}?)" if cased else ""
            return f"OpenVINO has no device {family!r}{hint}"
        if not ids:
            return f"no {family} device is present"
        if ident and ident not in ids:  # "CPU." is "CPU", as OpenVINO reads it
            named = [f"{family}.{i}" for i in ids if i]
            return f"{family} has no device {ident!r}" + (f" ({', '.join(named)})" if named else f", only {family}")
        return None

    @forget_keys
    def _compile(
        self, name: str, part: str, device: str, config: dict[str, Any], cache_dir: str | Path | None
    ) -> ov.CompiledModel:
        folder = cache_dir or os.environ.get(CACHE_DIR_ENV) or None
        entry = None
        _, chosen = self.part(name, part)
        cache_module = _shipped_cache(explicit=bool(cache_dir)) if folder else None
        if folder and cache_module is not None:
            self.check_device(device)  # naming the cache entry asks the device's plugin anyway
            entry = self._cache_entry(name, part, device, config, Path(folder))
            files = self.files.model(name).files
            # An entry is the compiled model: bounded by a generous multiple of what the model itself weighs.
            bound = 4 * sum(files[p].size for p in (chosen.xml, chosen.bin) if p) + (64 << 20)
            compiled = cache_module.load(entry[0], entry[1], entry[0].stem, self.core, device, config, max_size=bound)
            if compiled is not None:
                # A warm cache must not hide a replaced or missing model file. Checked after the entry
                # is loaded, so that loading it (not this check) is what first imports cryptography,
                # overlapping the read when the entry comes from the disk; it is never returned unchecked.
                self.files.check_files(name, [p for p in (chosen.xml, chosen.bin) if p])
                return compiled
        check = _DeviceCheck(self, device, checked=entry is not None)
        try:
            model = self.read_model(name, part, before_decrypt=check.wait)
        finally:
            check.join()
        try:
            compiled = self.core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise DeviceError(
                f"OpenVINO could not compile model {name!r} on {device}: {openvino_message(exc)} "
                f"(available devices: {', '.join(self.core.available_devices)})"
            ) from None
        pin_weights(compiled, model._ovcrypt_weights)
        if entry is not None and cache_module is not None:
            cache_module.store(entry[0], entry[1], compiled)
        return compiled

    @forget_keys
    def _cache_entry(
        self, name: str, part: str, device: str, config: dict[str, Any], folder: Path
    ) -> tuple[Path, bytes]:
        """The encrypted cache file for this compile, and the key it is encrypted under."""
        import openvino as ov

        from . import cache as _cache

        _, chosen = self.part(name, part)
        files = self.files.model(name).files
        kid = bytes.fromhex(self.files.manifest.key_id)
        key = self.files.key_for(kid, f"compiled-model cache of {name!r}")
        try:
            device_name = str(self.core.get_property(device, "FULL_DEVICE_NAME"))
        except RuntimeError:  # a virtual device (AUTO, MULTI...) may not report one
            device_name = ""
        # A single IR keeps its first-round cache names: the part is only named for folder models.
        ident = [name] if self.files.model(name).kind == IR_KIND else [name, part]
        digests = [*ident, *(files[p].sha256 for p in (chosen.xml, chosen.bin) if p)]
        entry = _cache.entry_name(kid, digests, device, config_key(config), ov.get_version(), device_name)
        return _cache.entry_path(folder.expanduser(), entry), key

    def unload(self, name: str | None = None) -> None:
        """Forget compiled models (all, or one model's) so their memory can be freed."""
        with self._lock:
            for key in [k for k in self._compiled if name is None or k[0] == name]:
                del self._compiled[key]
                self._compile_locks.pop(key, None)


def _shipped_cache(*, explicit: bool) -> ModuleType | None:
    """The cache module, imported on first use only (it brings the writer, tempfile and their memory); None when
    this product was built without it, after a warning when only $OVCRYPT_CACHE_DIR asked for it. Raises
    UnsupportedModelError (one line) when `cache_dir=` asked for it: the caller meant it, so it must not be ignored."""
    try:
        return importlib.import_module(f"{__package__}.cache")
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(f"{__package__}.cache"):
            raise  # a missing dependency keeps its own message
        asked = "cache_dir=" if explicit else f"${CACHE_DIR_ENV}"
        message = (
            f"this product ships no compiled-model cache, so {asked} cannot be used: build it with "
            "`compiled-model-cache = true` in its ovcrypt hook table"
        )
        if explicit:
            raise UnsupportedModelError(message) from None
        warn_caller(message + "; compiling without a cache")
        return None


class _DeviceCheck:
    """check_device on a helper thread, which loads the device's OpenVINO plugin, while the calling
    thread finds the key and the workers read the weights or fault in their buffer; `wait()` comes
    before the first segment is decrypted, so an unavailable device is still refused before that.

    Checking asks OpenVINO for its available devices, which loads every plugin (CPU, GPU, NPU...):
    20-100 ms here before this overlapped, on the calling thread, ahead of everything else. Plain
    compile_model(path) loads only the CPU plugin, before it reads any weights (and before this
    check existed the plugin was loaded the same way: 512 MiB from a cold cache, 7 alternating runs
    each, median 0.80 s serially and 0.62 s overlapped, against 0.55 s for plain OpenVINO).
    """

    def __init__(self, runtime: Runtime, device: str, *, checked: bool = False) -> None:
        """`checked`: the device was checked already; only wait() and join() remain, and they return at once."""
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(runtime, device), name="ovcrypt-device", daemon=True)
        if not checked:
            self._thread.start()

    def _run(self, runtime: Runtime, device: str) -> None:
        try:
            runtime.check_device(device)
        except Exception as exc:  # raised by wait(), in the loading thread
            self._error = exc

    def join(self) -> None:
        if self._thread.ident is not None:
            self._thread.join()

    def wait(self) -> None:
        """Return once the device is known to be available; raise its DeviceError otherwise."""
        self.join()
        if self._error is not None:
            raise self._error
