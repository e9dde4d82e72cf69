#!/usr/bin/env python3
"""Export the random Llama-style LLM folder that benchmarks/bench_genai.py measures (issue 10, performance).

    /work/fixture-venv/bin/python -m benchmarks.make_llm            # writes benchmarks/results/llm_bench/
    /work/fixture-venv/bin/python -m benchmarks.make_llm --force    # export again even if it is there

The model: a randomly initialised (seeded) ``LlamaForCausalLM``, hidden size 1024, 8 layers, 16 attention
heads, MLP width 2048, vocabulary 32000, untied input and output embeddings: 149.4 M parameters, that is
570 MiB of fp32 weights (:func:`weight_bytes` computes it; the export's ``openvino_model.bin`` is that size
within a few KiB). Its tokenizer is a byte-level BPE with a 32000-token vocabulary, trained here on a
seeded synthetic corpus (random "words") plus the fixture sentences; the chat template and special tokens
are the test fixtures'. Everything is exported with ``optimum-cli export openvino --task
text-generation-with-past --weight-format fp32``, offline (nothing comes from a model hub), and smoke-tested
with openvino-genai afterwards.

The model, tokenizer and export code is tests/fixtures/make_genai_fixtures.py's (imported, not copied);
this module only chooses a bigger configuration. Like that script it needs torch, transformers and
optimum-intel, which the project's own venv does not have. Make a private venv OUTSIDE the repository
(Python 3.11), as that script's docstring says:

    python3 -m venv /work/fixture-venv
    /work/fixture-venv/bin/pip install torch==2.13.0      # CPU build; first! (plain `pip install torch` is CUDA, GBs)
    /work/fixture-venv/bin/pip install torch==2.13.0 \\
        "optimum-intel[openvino]==2.2.0" "transformers==5.5.*" \\
        "diffusers==0.39.*" openvino==2026.4.1 \\
        openvino-tokenizers==2026.4.1.0 openvino-genai==2026.4.1.0 \\
        tokenizers pillow
    /work/fixture-venv/bin/pip uninstall -y torchvision    # does not import beside this torch; not needed

The folder is cached under benchmarks/results/ (gitignored): a rerun finds ``llm_bench/openvino_model.bin``
and exports nothing. Exporting took about 2 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fixtures import make_genai_fixtures as fixtures  # noqa: E402  (sets HF_HUB_OFFLINE=1 itself)

MiB = 1 << 20
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_OUT = RESULTS / "llm_bench"
MIN_WEIGHT_BYTES = 400 * MiB  # the floor for the benchmark model

# The configuration (see the module docstring for what it adds up to).
VOCAB_SIZE = 32000
HIDDEN = 1024
LAYERS = 8
HEADS = 16
KV_HEADS = 16
INTERMEDIATE = 2048
SYNTHETIC_SENTENCES = 60000  # enough distinct words for the BPE trainer to reach VOCAB_SIZE


def weight_bytes(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int) -> int:
    """Bytes of fp32 weights of an untied Llama of this shape (embeddings, attention, MLP, RMSNorms, head)."""
    head_dim = hidden // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim  # q, o; k, v
    mlp = 3 * hidden * intermediate  # gate, up, down
    per_layer = attention + mlp + 2 * hidden  # + input and post-attention RMSNorm
    params = 2 * vocab * hidden + layers * per_layer + hidden  # embeddings, lm_head; + final norm
    return 4 * params


def synthetic_corpus(sentences: int, seed: int = fixtures.SEED) -> list[str]:
    """Seeded pseudo-text: `sentences` lines of 6-12 random lowercase "words" of 2-10 letters each, then the
    fixtures' own sentences (so ordinary English prompts tokenize into few tokens)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = [
        " ".join("".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(rng.randint(6, 12)))
        for _ in range(sentences)
    ]
    return lines + fixtures.CORPUS * 4


def export(out: Path) -> None:
    """Export the benchmark LLM folder to `out` (replaced whole) and smoke-test it with openvino-genai."""
    tokenizer = fixtures.hf_llama_tokenizer(vocab_size=VOCAB_SIZE, corpus=synthetic_corpus(SYNTHETIC_SENTENCES))
    config: Any = fixtures.tiny_llama_config(
        tokenizer,
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=2048,
    )
    expected = weight_bytes(len(tokenizer), HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE)
    fixtures.log(f"tokenizer vocabulary {len(tokenizer)}; fp32 weights {expected} bytes ({expected / MiB:.1f} MiB)")
    if expected < MIN_WEIGHT_BYTES:
        raise SystemExit(f"the configuration has only {expected / MiB:.1f} MiB of weights; the issue asks >= 400 MiB")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    fixtures.export_llama(partial, tokenizer, config)
    fixtures.smoke_llm(partial)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)  # a run stopped half way leaves no folder that looks finished
    fixtures.log(f"{out}: {fixtures.folder_size(out)} bytes, openvino_model.bin "
                 f"{(out / 'openvino_model.bin').stat().st_size} bytes")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the folder to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="export again even if the folder is there")
    args = parser.parse_args(argv)
    if not args.force and (args.out / "openvino_model.bin").is_file():
        fixtures.log(f"{args.out} exists; not exporting again (--force to)")
        return 0
    export(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
