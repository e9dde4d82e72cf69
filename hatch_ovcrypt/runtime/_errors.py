"""The one error hierarchy of the runtime; the build plugin and the CLI raise these too.

Messages never contain key material: they name environment variables, files and key ids only.
"""

from __future__ import annotations


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


class ModelNotFoundError(OvcryptError, KeyError):
    """The package holds no model of that name."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnsafeConfigError(OvcryptError, ValueError):
    """A compile option that would write decrypted weights to disk (OpenVINO's CACHE_DIR)."""
