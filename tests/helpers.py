"""Shared test helpers: real IR models made with openvino's opset API, real wheels built with hatchling."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from hatch_ovcrypt.requirements import RUNTIME_REQUIREMENTS, genai_requirements
from ovcrypt_runtime._format.spec import Role
from ovcrypt_runtime._loading.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
# What a product declares in [project] dependencies: everything the runtime needs (the build refuses less),
# and for folder models openvino-genai and openvino-tokenizers of the installed openvino's release.
RUNTIME_DEPENDENCIES = ", ".join(f'"{r}"' for r in RUNTIME_REQUIREMENTS)
GENAI_DEPENDENCIES = ", ".join(f'"{r}"' for r in genai_requirements(ov.__version__))
WINDOW = 32  # a plaintext leak is any 32-byte window of the plaintext found elsewhere


def make_ir(xml: Path, weight_bytes: int = 64 << 10, *, seed: int = 0, width: int = 64) -> Path:
    """An MLP (MatMul + Add + ReLU layers) whose .bin holds about `weight_bytes` of fp32 weights.

    Input "x" is [1, width]. Weights are random, so the .bin is incompressible and leaks are easy to scan for.
    """
    rng = np.random.default_rng(seed)
    layers = max(1, weight_bytes // (4 * width * width))
    x = ops.parameter([1, width], np.float32, name="x")
    node: ov.Node = x
    for _ in range(layers):
        w = ops.constant((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
        b = ops.constant(rng.standard_normal((1, width)).astype(np.float32) * 0.1)
        node = ops.relu(ops.add(ops.matmul(node, w, False, False), b))
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([node], [x], f"mlp{seed}"), xml, compress_to_fp16=False)
    return xml


def sample_input(width: int = 64, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, width)).astype(np.float32)


def reference_output(xml: Path, inputs: np.ndarray) -> np.ndarray:
    """What plain OpenVINO computes from the plaintext IR on disk."""
    return np.asarray(ov.Core().compile_model(str(xml), "CPU")(inputs)[0])


def write_product(
    root: Path,
    models: Mapping[str, str | Mapping[str, object]],
    *,
    package: str = "acme_vision",
    extra_hook_options: str = "",
    extra_toml: str = "",
    requires: str = '"hatchling", "hatch-ovcrypt"',
    dependencies: str | None = None,
) -> Path:
    """A product project as a user writes it: src/<package>, plaintext models in models/ (kept out of the sdist)."""
    pkg = root / "src" / package
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("from ._ovcrypt import compile_model, model_names\n")

    def toml_value(value: str | Mapping[str, object]) -> str:
        if isinstance(value, str):
            return f'"{value}"'
        return "{ " + ", ".join(f'{k} = "{v}"' for k, v in value.items()) + " }"

    table = ", ".join(f"{name} = {toml_value(value)}" for name, value in models.items())
    if dependencies is None:
        folders = [v for v in models.values() if (not Path(v).suffix if isinstance(v, str) else "folder" in v)]
        dependencies = RUNTIME_DEPENDENCIES + (f", {GENAI_DEPENDENCIES}" if folders else "")
    (root / "pyproject.toml").write_text(
        f"""[build-system]
requires = [{requires}]
build-backend = "hatchling.build"

[project]
name = "{package.replace("_", "-")}"
version = "1.0.0"
dependencies = [{dependencies}]

[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]

[tool.hatch.build.targets.sdist]
exclude = ["/models"]

[tool.hatch.build.targets.wheel.hooks.ovcrypt]
models = {{ {table} }}
{extra_hook_options}
{extra_toml}"""
    )
    return root


def run(cmd: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def build_wheel(
    project: Path,
    key_env: Mapping[str, str],
    *,
    isolated: bool = False,
    outdir: Path | None = None,
    check: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m build --wheel` with real hatchling; non-isolated uses this interpreter's hatch-ovcrypt."""
    cmd = [sys.executable, "-m", "build", "--wheel", str(project), "--outdir", str(outdir or project / "dist")]
    if not isolated:
        cmd.insert(4, "--no-isolation")
    return run(cmd, env={**key_env, **(extra_env or {})}, check=check)


def only_wheel(dist: Path) -> Path:
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def unpack(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest)
    return dest


def runtime_for(ovcrypt_dir: Path, package: str = "acme_vision") -> Runtime:
    """The runtime class of this repo, over an `_ovcrypt` folder (unpacked wheel or rendered)."""
    return Runtime(ovcrypt_dir, package)


def plaintext_windows(files: Iterable[Path], step: int = 4096) -> set[bytes]:
    """32-byte windows sampled every `step` bytes (and at the end) of each plaintext file."""
    windows: set[bytes] = set()
    for path in files:
        data = path.read_bytes()
        for start in [*range(0, max(1, len(data) - WINDOW), step), max(0, len(data) - WINDOW)]:
            window = data[start : start + WINDOW]
            if len(window) == WINDOW and len(set(window)) > 4:  # skip runs of one byte, found everywhere
                windows.add(window)
    return windows


def find_leaks(windows: set[bytes], blobs: Iterable[tuple[str, bytes]]) -> list[str]:
    """Names of the blobs that contain any of the windows."""
    return [name for name, blob in blobs if any(w in blob for w in windows)]


def assert_no_plaintext_left(out: bytes | memoryview | np.ndarray, data: bytes, fill: int = 0) -> None:
    """After a failed decryption of the encrypted file `data` into `out` (filled with `fill` before): every
    segment of `out` is zeroed, untouched or still ciphertext. Plaintext was wiped, and nothing else had to be."""
    from ovcrypt_runtime._format.spec import parse_header

    header = parse_header(data, "t")[0]
    view = np.frombuffer(out, np.uint8).tobytes()
    for index in range(header.segment_count):
        start, end = header.segment_span(index)
        segment = view[start:end]
        ciphertext = data[header.header_size + start : header.header_size + end]
        allowed = (bytes(end - start), bytes([fill]) * (end - start), ciphertext)
        assert segment in allowed, f"segment {index} holds something other than zeros, {fill:#x} or its ciphertext"


def encrypted_path(folder: Path, model: str, role: Role) -> Path:
    return folder / "models" / f"{model}.{role.label}.ovc"


def render_folder(dest: Path, models: Mapping[str, Path], key: bytes, *, segment_size: int | None = None,
                  key_env: str = "OVCRYPT_KEY", package: str = "acme_vision", cache: bool = False) -> Path:  # fmt: skip
    """Render an `_ovcrypt` folder exactly as the hook does, without a wheel: fast, for tamper tests. `cache`:
    with `compiled-model-cache = true`, so that the folder ships the compiled-model cache."""
    from hatch_ovcrypt.hook.writer import render_table

    raw: dict[str, object] = {"models": {name: str(xml) for name, xml in models.items()}, "key-env": key_env}
    if cache:
        raw["compiled-model-cache"] = True
    if segment_size is not None:
        raw["segment-size"] = segment_size
    render_table(raw, dest, dest, package=package, key=key, environ=os.environ)
    return dest


def assert_rekey_refused(folder: Path, old_key: bytes, tmp_path: Path, why: str) -> None:
    """`hatch-ovcrypt rekey` of the `_ovcrypt` folder exits 2 with one line holding `why`, leaving every file
    of the folder byte for byte as it was."""
    before = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    (tmp_path / "old.key").write_text(old_key.hex())
    (tmp_path / "new.key").write_text(os.urandom(32).hex())
    cmd = [sys.executable, "-m", "hatch_ovcrypt", "rekey", str(folder), "--key-file", str(tmp_path / "old.key"),
           "--new-key-file", str(tmp_path / "new.key")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before
