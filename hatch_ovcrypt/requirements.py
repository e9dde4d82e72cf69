"""Every version floor that hatch-ovcrypt declares, in one place.

pyproject.toml lists the same requirements (tests/test_floors.py checks that they agree), and
tests/test_floors.py installs exactly these floors into a fresh environment, builds a product and
loads its model there. Raise a floor here, in pyproject.toml and nowhere else.

Why these floors (each tested; the versions below them fail or cannot be installed together):
- cryptography 43: 42.x refuses every in-place GCM update ("buffer must be at least N bytes"),
  so every encrypt and decrypt fails.
- openvino 2024.0 with numpy 1.24 (openvino 2024.x needs numpy < 2).
- hatchling 1.26.3, which needs packaging 24.2: before 1.26 hatchling sets no file size on a wheel's ZIP
  entries, so a model over 4 GiB fails only after it was encrypted (zipfile's "File size too large, try
  using force_zip64"); 1.26.0 to 1.26.2 were yanked, so 1.26.3 is the first that installs.
"""

from __future__ import annotations

# What the generated runtime imports in the product: the hook adds these to the product's requirements.
RUNTIME_REQUIREMENTS = ("openvino>=2024.0", "cryptography>=43", "numpy>=1.24")
# What the plugin itself needs at build time, besides the runtime's.
PLUGIN_REQUIREMENTS = ("hatchling>=1.26.3", "packaging>=24.2")
# Folder models (LLM/VLM pipelines) also need these, from the same release as the product's openvino.
GENAI_PACKAGES = ("openvino-genai", "openvino-tokenizers")


def floor_pins() -> list[str]:
    """Every declared floor as an exact pin (`name==floor`), for the test that installs exactly the floors."""
    return [r.replace(">=", "==") for r in (*RUNTIME_REQUIREMENTS, *PLUGIN_REQUIREMENTS)]


def genai_requirements(openvino_version: str) -> list[str]:
    """`openvino-genai~=Y.R.P` and `openvino-tokenizers~=Y.R.P` for an openvino version such as "2026.4.1-22982-...".

    Both are released with openvino and each version requires the openvino of its own YYYY.R release, at least
    the same patch (openvino-genai 2026.4.1 needs openvino-tokenizers 2026.4.1.*, which needs openvino
    2026.4.x >= 2026.4.1). `~=Y.R.P` admits later patches of that release and nothing else.
    """
    from packaging.version import Version

    release = (*Version(openvino_version.split("-", maxsplit=1)[0]).release, 0, 0)[:3]
    return [f"{name}~={'.'.join(map(str, release))}" for name in GENAI_PACKAGES]
