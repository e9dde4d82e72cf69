"""How this package finds its key: settings generated for the product by its build.

In a product's wheel, the build generated this file for that product from its hook table (`key-env`,
`key-provider`, `extensions`, `publisher-keys`), so the values below are the product's own. Only in the hatch-ovcrypt
source tree, where no build has generated it, are they the defaults.

These settings are code, not manifest data, on purpose: the manifest can only be authenticated once a
key is found, so nothing in it may choose which environment variable is read or which module is
imported to find that key (docs/SECURITY.md). The integrity of this file, like that of every other
installed module, is the platform's job (hash-pinned installs, signed images).
"""

from __future__ import annotations

# Environment variable holding the key (one, or a comma-separated list); `<KEY_ENV>_FILE` may name a file.
KEY_ENV: str = "OVCRYPT_KEY"
# `module:function` called with a key id (hex) when no other source has the key, or None.
KEY_PROVIDER: str | None = None
# Modules imported before OpenVINO reads an IR, so extension ops (tokenizers) are known.
EXTENSIONS: tuple[str, ...] = ()
# Publisher public keys (PEM, ECDSA P-256): when any, the package's model.sig must verify under one of them
# before anything is decrypted (docs/SECURITY.md, "Publisher signatures"). Empty: no signature is checked.
PUBLISHER_KEYS: tuple[str, ...] = ()
