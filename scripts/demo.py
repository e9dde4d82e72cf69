"""The main job, end to end: build the example product's encrypted wheel, install it fresh, run it.

    python3 scripts/demo.py

1. a build venv (.venv-demo) gets hatch-ovcrypt; the example's IR models are generated (no downloads);
2. a throwaway demo key is made with `hatch-ovcrypt keygen`;
3. the example product's wheel is built with hatchling and the ovcrypt hook;
4. the wheel is installed into a fresh venv, imported, and run; the result is compared with plain OpenVINO;
5. the wheel is scanned: no .xml/.bin, and no 32-byte window of the plaintext IR anywhere in it;
6. uv installs the example from source into another fresh venv (its build environment takes hatch-ovcrypt
   from a local wheel through UV_FIND_LINKS), with the requirements in its static [project] metadata, and runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from _venv import REPO, ensure_venv

DEMO = REPO / ".demo"

RUN_PRODUCT = """
import sys
import numpy as np
import openvino as ov
import acme_vision
from acme_vision._ovcrypt import compile_model, model_names

image = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)
print("models in the wheel:", ", ".join(model_names()))
print("acme_vision.classify(image) ->", acme_vision.classify(image))
heat = acme_vision.detect(image)
print("acme_vision.detect(image)   -> heat maps", heat.shape, "mean %.6f" % heat.mean())
models = sys.argv[1]
for name, xml in (("classifier", "cls/classifier.xml"), ("detector", "detector.xml")):
    plain = ov.Core().compile_model(f"{models}/{xml}", "CPU")(image)[0]
    same = np.array_equal(compile_model(name)(image)[0], plain)
    print(f"{name}: encrypted-wheel output bit-identical to plain OpenVINO on the plaintext IR: {same}")
    assert same
import openvino_genai
plain = openvino_genai.LLMPipeline(f"{models}/assistant", "CPU")
for question in ("hello", "What do you see?"):
    answer = acme_vision.ask(question)
    print(f"acme_vision.ask({question!r}) -> {answer!r}")
    same = answer == plain.generate(question)
    print(f"assistant: answer from the encrypted wheel equals LLMPipeline on the plain folder: {same}")
    assert same
"""


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def sh(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(c) for c in cmd], check=True, env={**os.environ, **(env or {})})


def scan_wheel(wheel: Path, models: Path) -> None:
    plaintext = sorted(p for p in models.rglob("*") if p.is_file())
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        blob = b"".join(zf.read(n) for n in names)
    for name in names:
        print("  ", name)
    assert not [n for n in names if n.endswith((".xml", ".bin"))], "plaintext IR file in the wheel"
    assert not [n for n in names if n.endswith(".json") and not n.endswith("/manifest.json")], "a config in the wheel"
    windows = 0
    for path in plaintext:
        data = path.read_bytes()
        for start in range(0, max(1, len(data) - 31), 64):
            window = data[start : start + 32]
            if len(window) == 32 and len(set(window)) > 4:
                windows += 1
                assert window not in blob, f"plaintext of {path.name} found in the wheel"
    print(f"no plaintext: 0 of {windows} 32-byte windows of {len(plaintext)} plaintext model files found in the wheel")


def main() -> int:
    step("build environment with hatch-ovcrypt")
    python = ensure_venv(".venv-demo", "demo")
    bin_dir = python.parent
    shutil.rmtree(DEMO, ignore_errors=True)
    project = DEMO / "acme-vision"
    shutil.copytree(REPO / "example_project", project, ignore=shutil.ignore_patterns("models", "dist"))

    step("generate the example's IR models with openvino's opset API; copy the tiny LLM folder")
    sh(python, project / "make_models.py", project, "--assistant-from", REPO / "tests" / "fixtures" / "tiny_llm")

    step("make a throwaway demo key (in real use: a CI secret)")
    key_file = DEMO / "demo.key"
    sh(bin_dir / "hatch-ovcrypt", "keygen", "--out", key_file)
    key_env = {"OVCRYPT_KEY_FILE": str(key_file)}

    step("check the hook table, then build the encrypted wheel with hatchling")
    sh(bin_dir / "hatch-ovcrypt", "check", project, env=key_env)
    sh(python, "-m", "build", "--wheel", "--no-isolation", project, "--outdir", DEMO / "dist", env=key_env)
    (wheel,) = (DEMO / "dist").glob("*.whl")

    step(f"install {wheel.name} into a fresh virtual environment")
    product = DEMO / "venv-product"
    venv.EnvBuilder(with_pip=True, clear=True).create(product)
    product_python = product / "bin" / "python"
    sh(product_python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)

    step("import the product and run inference (decrypted in memory only)")
    sh(product_python, "-c", RUN_PRODUCT, project / "models", env=key_env)

    step(f"what {wheel.name} holds")
    scan_wheel(wheel, project / "models")

    step("uv: install the example from source into a fresh venv, as `uv pip install DIR` does, and run it")
    uv = bin_dir / "uv"
    plugin = DEMO / f"plugin-wheel-{os.getpid()}"  # a new path: uv caches a local wheel by its path and version
    sh(python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", REPO, "-w", plugin)
    uv_product = DEMO / "venv-uv"
    sh(uv, "venv", "--quiet", "--python", sys.executable, uv_product)
    uv_python = uv_product / "bin" / "python"
    uv_env = {**key_env, "UV_FIND_LINKS": str(plugin)}
    sh(uv, "pip", "install", "--python", uv_python, "--refresh-package", "hatch-ovcrypt", project, env=uv_env)
    sh(uv_python, "-c", RUN_PRODUCT, project / "models", env=key_env)
    print("\ndemo ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
