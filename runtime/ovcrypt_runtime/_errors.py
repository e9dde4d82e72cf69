"""The one error hierarchy of the runtime; the build plugin and the CLI raise these too.

Messages never contain key material: they name environment variables, files and key ids only.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from types import FrameType


class OvcryptError(Exception):
    """Base class of every error this runtime raises on purpose."""


class KeyMissingError(OvcryptError):
    """No key was offered at all (no set_key, no environment variable, no key file, no provider)."""


class KeyFormatError(OvcryptError, ValueError):
    """A key was offered but is not 32 bytes / 64 hex characters."""


class WrongKeyError(OvcryptError):
    """Keys were offered, but none has the key id the file was encrypted under."""


class IntegrityError(OvcryptError):
    """An encrypted file or the manifest failed authentication or is malformed."""


class FormatError(IntegrityError):
    """The bytes are not a file of this format at all (bad magic, unknown version, bad sizes)."""


class ManifestError(IntegrityError):
    """The manifest is missing, malformed, edited, or points outside its package."""


class SignatureError(OvcryptError):
    """The package's publisher signature is missing or does not verify under a publisher key its runtime pins."""


class ModelNotFoundError(OvcryptError, KeyError):
    """The package holds no model of that name."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnsafeConfigError(OvcryptError, ValueError):
    """A compile option that would write decrypted weights to disk (OpenVINO's CACHE_DIR)."""


class DeviceError(OvcryptError, RuntimeError):
    """The OpenVINO device is unknown or unavailable here, or compiling on it failed; names the devices there are."""


class UnsupportedModelError(OvcryptError):
    """The model cannot be built the way it was asked for (a missing package, a part it does not have)."""


_OV_LOCATION = re.compile(r"(Exception from |Check '.*' failed at )\S+:\d+:?$")


def openvino_message(exc: BaseException) -> str:
    """OpenVINO's errors are lines of C++ source locations around the message: keep only the message, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = [line for line in lines if not _OV_LOCATION.match(line)]
    return " ".join(message or lines) or type(exc).__name__


# --- warnings --------------------------------------------------------------------------------------

# The runtime package's root: every frame below it is the runtime's.
_RUNTIME_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")


def warn_caller(message: str) -> None:
    """A RuntimeWarning "hatch-ovcrypt: <message>", attributed to the line that called into the runtime, not to
    the runtime itself."""
    warnings.warn(f"hatch-ovcrypt: {message}", RuntimeWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """The `stacklevel` that makes warnings.warn, called in warn_caller, name the first frame outside this runtime.

    Counted as warnings.warn steps: it skips importlib's own frames (a lazy `from <package>._ovcrypt import
    detector` runs through them) without counting them. (Python 3.12's skip_file_prefixes does the same.)"""
    frame: FrameType | None = sys._getframe(1)  # warn_caller: stacklevel 1
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_RUNTIME_DIR):
        frame = frame.f_back
        while frame is not None and _is_importlib(frame.f_code.co_filename):
            frame = frame.f_back
        level += 1
    return level


def _is_importlib(filename: str) -> bool:
    """The frames warnings.warn steps over (its _is_internal_frame)."""
    return "importlib" in filename and "_bootstrap" in filename
