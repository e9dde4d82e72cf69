"""acme-vision: an example product whose models (two IRs and an LLM folder) ship encrypted inside its wheel."""

from __future__ import annotations

import numpy as np

from ._ovcrypt import compile_model, llm_pipeline, model_names

__all__ = ["ask", "classify", "detect", "model_names"]


def classify(image: np.ndarray) -> int:
    """Index of the most likely class for a 1x3x32x32 float32 image."""
    probabilities = compile_model("classifier")(image)[0]
    return int(np.argmax(probabilities))


def detect(image: np.ndarray) -> np.ndarray:
    """Four 32x32 heat maps for a 1x3x32x32 float32 image."""
    return np.asarray(compile_model("detector")(image)[0])


def ask(question: str) -> str:
    """The tiny assistant's answer (an LLMPipeline built in memory from the encrypted folder)."""
    return str(llm_pipeline("assistant").generate(question))
