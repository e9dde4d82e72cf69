"""Image-generation component configs without a decrypted file (issue 21): a constant `{}` stub, then setters.

openvino-genai makes each component's `Config` only from a path. A Config made from a file holding `{}` has
openvino-genai's defaults, and Python can set every field that `Config(path)` reads from the JSON
(src/cpp/src/image_generation/models/*.cpp) except two: `AutoencoderKL.Config.shift_factor` (SD3, Flux VAEs)
and `FluxTransformer2DModel.Config.guidance_embeds` (Flux dev). A config that sets one of those to anything
but its default still needs its file (a memory folder; `needs_file`). The stub is not secret: one file
holding `{}` per process, in the system's temp folder, removed at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import tempfile
import threading
from typing import Any

# The fields Config(path) reads from config.json, by component class: all settable from Python.
_CLIP = ("max_position_embeddings", "num_hidden_layers")
SETTABLE = {
    "CLIPTextModel": _CLIP, "CLIPTextModelWithProjection": _CLIP,
    "UNet2DConditionModel": ("in_channels", "sample_size", "time_cond_proj_dim"),
    "AutoencoderKL": ("in_channels", "latent_channels", "out_channels", "scaling_factor", "block_out_channels"),
    "SD3Transformer2DModel": ("sample_size", "patch_size", "in_channels", "joint_attention_dim"),
    "FluxTransformer2DModel": ("in_channels",),
}  # fmt: skip
# Fields Config(path) reads that Python does not expose, with openvino-genai's defaults (the class headers).
UNEXPOSED: dict[str, dict[str, object]] = {
    "AutoencoderKL": {"shift_factor": 0.0}, "FluxTransformer2DModel": {"guidance_embeds": False},
}  # fmt: skip

_stub: str | None = None
_lock = threading.Lock()


def stub_path() -> str:
    """A file holding `{}` (made once per process; not secret)."""
    global _stub
    with _lock:
        if _stub is None:
            fd, path = tempfile.mkstemp(prefix="ovcrypt-empty-config-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                f.write("{}")
            atexit.register(_remove, path)
            _stub = path
        return _stub


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def needs_file(component: str, data: bytes) -> bool:
    """Whether `Config(path)` of this config.json sets a field Python cannot (then only its file will do)."""
    parsed = json.loads(data)
    if not isinstance(parsed, dict):
        return False
    return any(parsed.get(field) is not None and parsed[field] != default
               for field, default in UNEXPOSED.get(component, {}).items())  # fmt: skip


def config_from_json(config_class: Any, component: str, data: bytes) -> Any:
    """`config_class` (e.g. openvino_genai.UNet2DConditionModel.Config) as Config(path) would make it from a file
    holding `data`: made from the `{}` stub, then each field openvino-genai reads set from the JSON (present and
    not null, as read_json_param). Only for configs `needs_file` says need none."""
    parsed = json.loads(data)
    config = config_class(stub_path())
    if isinstance(parsed, dict):
        for field in SETTABLE[component]:
            value = parsed.get(field)
            if value is not None:
                setattr(config, field, value)
    return config
