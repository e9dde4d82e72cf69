"""hatch-ovcrypt GenAI benchmark (issue 10, performance): an LLM folder built from memory vs from the plain folder.

    .venv/bin/python -m benchmarks.bench_genai            # 9 cold + 9 warm alternating pairs
    .venv/bin/python -m benchmarks.bench_genai --quick    # 3 + 3 pairs

The model is the random Llama-style export of benchmarks/make_llm.py (570 MiB of fp32 weights), cached in
benchmarks/results/llm_bench/; make it first with a torch venv (see that module's docstring). This script
needs only the project's venv with openvino-genai and openvino-tokenizers: no torch.

The folder is encrypted with the project's own writer (`hatch_ovcrypt.hook.writer.render_table`) into a package
rendered exactly as its wheel installs (benchmarks.bench.render_installed). Then fresh processes alternate:
plain is `openvino_genai.LLMPipeline(folder, "CPU")`; encrypted imports `<package>._ovcrypt` and calls
`llm_pipeline("assistant")`. Each child times the construction (around the one call; the imports of
openvino_genai and of `_ovcrypt` come before it, the runtime's own imports and decryption are inside it)
in wall seconds and in CPU seconds of all its threads (time.process_time: less sensitive than wall time
to other load on the machine), reads its peak RSS (VmHWM, MiB) right after it, then generates
`max_new_tokens=64` tokens greedily (`do_sample=False`, `ignore_eos=True` so that every run generates all
64) and reports tokens per second (64 / wall seconds of generate). The parent checks that every run,
plain or encrypted, generates the same text.

Cold rows: the page cache is dropped before every run (`sync; echo 1 > /proc/sys/vm/drop_caches`, root
only; without root the cold rows are skipped and the report says so). Warm rows: not dropped, one untimed
pair first. A phase probe (warm) splits the encrypted construction into decryption and openvino-genai's
own work, next to the plain constructor's parts, to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench import (  # noqa: E402
    _CHILD_PRELUDE,
    MiB,
    Table,
    alternate,
    build_rows,
    drop_caches,
    med,
    publish,
    render_installed,
    reported,
    run_child,
    spread,
)

DEFAULT_MODEL = REPO / "benchmarks" / "results" / "llm_bench"
PACKAGE, NAME = "benchllm", "assistant"
PROMPT = "The quick brown fox"
MAX_NEW_TOKENS = 64
BUILD_TIME_LIMIT, BUILD_RSS_LIMIT = 1.25, 1.10  # the targets, cold page cache

# Both children: construct (timed), peak RSS, then one greedy generate of MAX_NEW_TOKENS tokens (timed).
_GENERATE = """
build_rss = peak_kib()
config = pipe.get_generation_config()
config.max_new_tokens = int(sys.argv[-1])
config.do_sample = False
config.ignore_eos = True
prompt = sys.argv[-2]
t2 = time.perf_counter()
result = pipe.generate([prompt], config)
t3 = time.perf_counter()
tokens = result.perf_metrics.get_num_generated_tokens()
print(json.dumps({"build": t1 - t0, "build_cpu": c1 - c0, "build_rss_kib": build_rss, "rss_kib": peak_kib(),
                  "generate": t3 - t2, "tokens": tokens, "tps": tokens / (t3 - t2), "text": result.texts[0]}))
"""

PLAIN_CHILD = (
    _CHILD_PRELUDE
    + """
import openvino_genai
c0, t0 = time.process_time(), time.perf_counter()
pipe = openvino_genai.LLMPipeline(sys.argv[1], "CPU")
t1, c1 = time.perf_counter(), time.process_time()
"""
    + _GENERATE
)

ENCRYPTED_CHILD = (
    _CHILD_PRELUDE
    + """
import importlib
import openvino_genai
runtime = importlib.import_module(sys.argv[1] + "._ovcrypt")
c0, t0 = time.process_time(), time.perf_counter()
pipe = runtime.llm_pipeline(sys.argv[2])
t1, c1 = time.perf_counter(), time.process_time()
"""
    + _GENERATE
)

# Where the time goes (warm page cache): plain constructor vs the encrypted one, phase by phase.
PHASES_CHILD = (
    _CHILD_PRELUDE
    + """
import importlib
import openvino_genai
package, name, folder = sys.argv[1:4]
runtime = importlib.import_module(package + "._ovcrypt")
genai = importlib.import_module(package + "._ovcrypt._genai")
t = [time.perf_counter()]
rt = runtime._get(); rt.load_extensions(); t.append(time.perf_counter())
tok = genai.tokenizer(rt, name); t.append(time.perf_counter())
config = genai.generation_config(rt, name); t.append(time.perf_counter())
xml, weights = genai.ir_in_memory(rt, name, "openvino_model"); t.append(time.perf_counter())
pipe = openvino_genai.LLMPipeline(xml, weights, tok, "CPU", config); t.append(time.perf_counter())
del pipe
plain_tok = openvino_genai.Tokenizer(folder); t.append(time.perf_counter())
plain = openvino_genai.LLMPipeline(folder, "CPU"); t.append(time.perf_counter())
names = ["runtime+extensions", "tokenizer", "generation_config", "decrypt model", "LLMPipeline(memory)",
         "plain Tokenizer(folder)", "plain LLMPipeline(folder)"]
print(json.dumps({n: t[i + 1] - t[i] for i, n in enumerate(names)}))
"""
)

Run = tuple[dict[str, Any], float]


def folder_weights(folder: Path) -> int:
    """Bytes of the folder's .bin files (the weights of all its IRs)."""
    return sum(p.stat().st_size for p in folder.rglob("*.bin"))


def rows(table: Table, label: str, plain: list[Run], enc: list[Run], *, targets: bool) -> None:
    """Construction time, peak RSS and tokens per second of alternating runs, as table rows."""
    build_rows(table, label, plain, enc, (BUILD_TIME_LIMIT, BUILD_RSS_LIMIT) if targets else None)
    ga, gb = [r["rss_kib"] / 1024 for r, _ in plain], [r["rss_kib"] / 1024 for r, _ in enc]
    ta, tb = [r["tps"] for r, _ in plain], [r["tps"] for r, _ in enc]
    wa, wb = [w for _, w in plain], [w for _, w in enc]
    table.add(f"{label}: peak RSS after generate, median MiB", f"{med(ga):.0f}", f"{med(gb):.0f}",
              reported(med(gb) / med(ga)))  # fmt: skip
    table.add(f"{label}: generate {MAX_NEW_TOKENS} tokens, median tokens/s", f"{med(ta):.2f}", f"{med(tb):.2f}",
              reported(med(tb) / med(ta)))  # fmt: skip
    table.add(f"{label}: generate, min–max tokens/s", f"{min(ta):.2f}–{max(ta):.2f}", f"{min(tb):.2f}–{max(tb):.2f}",
              "")  # fmt: skip
    table.add(f"{label}: whole process, median s", f"{med(wa):.2f}", f"{med(wb):.2f}", reported(med(wb) / med(wa)))


def check_same_text(runs: Sequence[Run]) -> str:
    """The one text every run generated; AssertionError listing the differences otherwise."""
    texts: set[str] = {str(r["text"]) for r, _ in runs}
    tokens = {r["tokens"] for r, _ in runs}
    assert len(texts) == 1, f"the runs generated {len(texts)} different texts: {sorted(texts)!r}"
    assert tokens == {MAX_NEW_TOKENS}, f"generated token counts {sorted(tokens)}, not {MAX_NEW_TOKENS}"
    return texts.pop()


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 cold and 3 warm pairs instead of 9 and 9")
    parser.add_argument("--pairs", type=int, help="alternating pairs per cache mode (default 9, --quick 3)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the exported LLM folder (make_llm.py)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ovcrypt-bench-genai"))
    parser.add_argument("--no-phases", action="store_true", help="skip the phase probe")
    parser.add_argument("--output", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    folder: Path = args.model.resolve()
    if not (folder / "openvino_model.bin").is_file():
        make = "/work/fixture-venv/bin/python -m benchmarks.make_llm"
        raise SystemExit(f"no LLM folder at {folder}; make it with: {make}")
    pairs: int = args.pairs or (3 if args.quick else 9)
    loads = [loadavg()]

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg} (load average {loadavg()})", flush=True)

    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    key = secrets.token_bytes(32)
    (work / "key.hex").write_text(key.hex())  # for probing the product after the run
    log(f"encrypting {folder} with hatch_ovcrypt.hook.writer into {work / 'site'}")
    t0 = time.perf_counter()
    render_installed(work / "site", PACKAGE, {NAME: folder}, key)
    render_s = time.perf_counter() - t0
    enc_env: Mapping[str, str] = {"OVCRYPT_KEY": key.hex(), "PYTHONPATH": str(work / "site")}
    tail = [PROMPT, str(MAX_NEW_TOKENS)]

    def plain_run(cold: bool) -> Callable[[], Run]:
        return lambda: run_child(PLAIN_CHILD, [str(folder), *tail], {}, cold=cold)

    def enc_run(cold: bool) -> Callable[[], Run]:
        return lambda: run_child(ENCRYPTED_CHILD, [PACKAGE, NAME, *tail], enc_env, cold=cold)

    table = Table()
    notes: list[str] = []
    everything: list[Run] = []
    can_drop = drop_caches()
    if can_drop:
        log(f"cold page cache: {pairs} alternating pairs")
        a, b = alternate(pairs, plain_run(True), enc_run(True))
        rows(table, "cold", a, b, targets=True)
        everything += a + b
        loads.append(loadavg())
    else:
        notes.append("Cold rows skipped: dropping the page cache needs root (/proc/sys/vm/drop_caches).")
    log(f"warm page cache: 1 untimed pair, then {pairs} alternating pairs")
    plain_run(False)(), enc_run(False)()
    a, b = alternate(pairs, plain_run(False), enc_run(False))
    rows(table, "warm", a, b, targets=not can_drop)
    everything += a + b
    loads.append(loadavg())
    text = check_same_text(everything)
    table.add("every run generated the same text", "", "", f"yes ({len(everything)} runs)")

    if not args.no_phases:
        log("phase probe (warm page cache)")
        probes = [run_child(PHASES_CHILD, [PACKAGE, NAME, str(folder)], enc_env, cold=False)[0]
                  for _ in range(3 if args.quick else 5)]  # fmt: skip
        for phase in probes[0]:
            values = [p[phase] for p in probes]
            notes.append(f"phase {phase}: median {med(values):.3f} s ({spread(values)})")
        loads.append(loadavg())

    import openvino as ov
    import openvino_genai

    weights = folder_weights(folder)
    elapsed = time.perf_counter() - started
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    header = [
        f"hatch-ovcrypt GenAI benchmark ({'--quick' if args.quick else 'full'}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, ran in {elapsed:.0f} s",
        f"machine: nproc {os.cpu_count()}, CPU {cpu}; load average (1/5/15 min) at start and after each part: "
        + " | ".join(loads),
        f"python {platform.python_version()}, openvino {ov.get_version()}, openvino-genai {openvino_genai.__version__}",
        f"model: {folder.name}, {weights} bytes of weights ({weights / MiB:.0f} MiB) in "
        f"{sum(1 for p in folder.rglob('*') if p.is_file())} files; encrypted in {render_s:.1f} s",
        f"targets (cold page cache): build ≤{BUILD_TIME_LIMIT}x, peak RSS after build ≤{BUILD_RSS_LIMIT}x; "
        "the warm rows and tokens/s are reported",
        f"generate([{PROMPT!r}], max_new_tokens={MAX_NEW_TOKENS}, greedy, ignore_eos) -> {text[:60]!r}…",
    ]
    publish(header, table, notes, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
