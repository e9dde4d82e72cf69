"""Which of the runtime's modules a product ships: the core always, the optional parts only when its models or
options need them. An IR-only product gets no GenAI builders, no memory folders, no OpenSSL-recipe loader and,
unless it asks for the compiled-model cache, no writer; its `_ovcrypt/__init__.py` then refuses those functions
(and `cache_dir=`) with UnsupportedModelError in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import ovcrypt_runtime

from ..checks.project import Plan, needs_genai
from ..config import OPENSSL

RUNTIME_DIR = Path(ovcrypt_runtime.__file__).parent
# The optional modules (a folder stands for every module under it), relative to RUNTIME_DIR, with the parts that
# need each; a module no part names is the core, which every product ships. tests/test_layout.py checks that every
# combination imports and works with only what it ships.
OPTIONAL: dict[Path, tuple[str, ...]] = {
    Path("_pipelines"): ("pipelines",),  # GenAI builders and memory folders: GenAI folder models
    Path("_loading", "openssl.py"): ("openssl",),  # load_openssl_model: products built from OpenSSL-recipe models
    Path("_keys", "holders"): ("holders",),  # key holders (age, transit, pkcs11, awskms): built with a data-key
    Path("_keys", "signature.py"): ("signature",),  # the publisher-signature verifier: products that pin keys
    Path("_loading", "cache.py"): ("cache",),  # the encrypted compiled-model cache: `compiled-model-cache = true`
    Path("_format", "writer.py"): ("cache",),  # the format's writer: only the cache encrypts at run time
    Path("_format", "atomic.py"): ("cache", "holders"),  # write-then-rename: cache entries, unwrapped data keys
    Path("_format", "into_file.py"): ("pipelines",),  # decrypting into memory files: the memory folder's route
    Path("_format", "private.py"): ("cache", "pipelines"),  # private folders: the cache's, the config opt-in's
}


@dataclass(frozen=True)
class RuntimeParts:
    """The optional parts of the runtime one product ships."""

    pipelines: bool = True
    openssl: bool = True
    holders: bool = True
    signature: bool = True
    cache: bool = True

    @classmethod
    def of(cls, plan: Plan) -> RuntimeParts:
        """What the plan's models and options need: pipelines for GenAI folder models (the same test that makes
        openvino-genai a product requirement), the OpenSSL loader for OpenSSL-recipe source models, the key
        holders for a product whose key comes from a data-key (its manifest then names holders), the signature
        verifier for a product that signs (its settings then pin publisher keys), the compiled-model cache when
        the table asks for it (`compiled-model-cache = true`)."""
        return cls(
            pipelines=needs_genai(plan.models),
            openssl=any(spec.origin == OPENSSL for spec in plan.options.models),
            holders=plan.datakey is not None,
            signature=plan.options.signing_key is not None,
            cache=plan.options.compiled_model_cache,
        )

    def shipped(self) -> list[str]:
        """The names of the optional parts shipped, in declaration order."""
        return [f.name for f in fields(self) if getattr(self, f.name)]

    def name(self) -> str:
        """A short label for reports: "core", "core+pipelines", "core+openssl+cache", ..."""
        return "+".join(["core", *self.shipped()])


def runtime_modules(parts: RuntimeParts) -> list[Path]:
    """The runtime's modules a product with these parts ships, relative to RUNTIME_DIR, sorted."""
    shipped = set(parts.shipped())
    modules = []
    for module in sorted(RUNTIME_DIR.rglob("*.py")):
        relpath = module.relative_to(RUNTIME_DIR)
        needed_by = [by for optional, by in OPTIONAL.items() if relpath.is_relative_to(optional)]
        if all(shipped.intersection(by) for by in needed_by):
            modules.append(relpath)
    return modules
