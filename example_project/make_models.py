"""Make the example's models without downloading anything: a detector and a classifier with openvino's opset API,
and the tiny assistant: an LLM folder as `optimum-cli export openvino` writes it, copied from the random test
fixture that hatch-ovcrypt's repository commits (tests/fixtures/tiny_llm, made by make_genai_fixtures.py).

    python make_models.py [PROJECT_DIR] [--assistant-from FOLDER]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops


def _conv(x: ov.Node, rng: np.random.Generator, cin: int, cout: int) -> ov.Node:
    w = ops.constant(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.2)
    b = ops.constant(rng.standard_normal((1, cout, 1, 1)).astype(np.float32) * 0.1)
    return ops.relu(ops.add(ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1]), b))


def detector(seed: int = 1) -> ov.Model:
    """1x3x32x32 image -> 1x4x32x32 heat maps."""
    rng = np.random.default_rng(seed)
    image = ops.parameter([1, 3, 32, 32], np.float32, name="image")
    x = _conv(image, rng, 3, 8)
    x = _conv(x, rng, 8, 4)
    return ov.Model([ops.sigmoid(x)], [image], "detector")


def classifier(seed: int = 2, classes: int = 10) -> ov.Model:
    """1x3x32x32 image -> 1x10 class probabilities."""
    rng = np.random.default_rng(seed)
    image = ops.parameter([1, 3, 32, 32], np.float32, name="image")
    x = _conv(image, rng, 3, 8)
    x = ops.reshape(x, ops.constant(np.array([1, -1], dtype=np.int64)), False)
    w = ops.constant(rng.standard_normal((8 * 32 * 32, classes)).astype(np.float32) * 0.01)
    logits = ops.matmul(x, w, False, False)
    return ov.Model([ops.softmax(logits, 1)], [image], "classifier")


def main(root: Path, assistant: Path | None) -> None:
    if assistant is not None:
        target = root / "models" / "assistant"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(assistant, target)
        print(f"copied the assistant's exported folder to {target}")
    for model, path in ((detector(), root / "models/detector.xml"), (classifier(), root / "models/cls/classifier.xml")):
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, path, compress_to_fp16=False)
        print(f"wrote {path} and {path.with_suffix('.bin').name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project_dir", nargs="?", type=Path, default=Path(__file__).parent, help="where models/ goes")
    parser.add_argument("--assistant-from", type=Path, help="an exported LLM folder to ship as the assistant")
    args = parser.parse_args()
    main(args.project_dir, args.assistant_from)
