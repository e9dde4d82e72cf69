"""Which of the runtime's modules a product ships: the core always, the optional parts only when its models
need them (issue 19). An IR-only product gets no GenAI builders, no memory folders and no OpenSSL-recipe
loader; its `_ovcrypt/__init__.py` then refuses those functions with UnsupportedModelError in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ovcrypt_runtime

from ..checks.project import Plan, needs_genai
from ..config import OPENSSL

RUNTIME_DIR = Path(ovcrypt_runtime.__file__).parent
# The optional parts, as paths relative to RUNTIME_DIR (a folder stands for every module under it).
PIPELINES = Path("_pipelines")  # GenAI builders and memory folders: llm, vlm and text2image models
OPENSSL_LOADER = Path("_loading", "openssl.py")  # load_openssl_model: products built from OpenSSL-recipe models
HOLDERS = Path("_keys", "holders")  # key holders (age, transit, pkcs11, awskms): products built with a data-key
SIGNATURE = Path("_keys", "signature.py")  # the publisher-signature verifier: products that pin publisher keys


@dataclass(frozen=True)
class RuntimeParts:
    """The optional parts of the runtime one product ships."""

    pipelines: bool = True
    openssl: bool = True
    holders: bool = True
    signature: bool = True

    @classmethod
    def of(cls, plan: Plan) -> RuntimeParts:
        """What the plan's models need: pipelines for GenAI folder models (the same test that makes
        openvino-genai a product requirement), the OpenSSL loader for OpenSSL-recipe source models, the key
        holders for a product whose key comes from a data-key (its manifest then names holders), the signature
        verifier for a product that signs (its settings then pin publisher keys)."""
        return cls(
            pipelines=needs_genai(plan.models),
            openssl=any(spec.origin == OPENSSL for spec in plan.options.models),
            holders=plan.datakey is not None,
            signature=plan.options.signing_key is not None,
        )

    def name(self) -> str:
        """A short label for reports: "core", "core+pipelines", "core+openssl", "core+pipelines+openssl"."""
        chosen = {
            "pipelines": self.pipelines, "openssl": self.openssl, "holders": self.holders, "signature": self.signature
        }  # fmt: skip
        return "+".join(["core", *(name for name, shipped in chosen.items() if shipped)])


def runtime_modules(parts: RuntimeParts) -> list[Path]:
    """The runtime's modules a product with these parts ships, relative to RUNTIME_DIR, sorted."""
    shipped = []
    for module in sorted(RUNTIME_DIR.rglob("*.py")):
        relpath = module.relative_to(RUNTIME_DIR)
        if not parts.pipelines and relpath.is_relative_to(PIPELINES):
            continue
        if not parts.openssl and relpath == OPENSSL_LOADER:
            continue
        if not parts.holders and relpath.is_relative_to(HOLDERS):
            continue
        if not parts.signature and relpath == SIGNATURE:
            continue
        shipped.append(relpath)
    return shipped
