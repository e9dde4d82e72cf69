"""Where things sit inside an `_ovcrypt` folder, and where the cache goes. Imports nothing, so the
package's `__init__` can use it without loading cryptography."""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"
# The publisher's signature (docs/FORMAT.md §5.3); model-signing's default name.
SIGNATURE_NAME = "model.sig"
# Turns the encrypted compiled-model cache on for a deployment (a folder path).
CACHE_DIR_ENV = "OVCRYPT_CACHE_DIR"
MODELS_DIR = "models"
