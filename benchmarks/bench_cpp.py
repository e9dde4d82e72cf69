"""C++ benchmark (issue 14): loading the 512 MiB model with the C++ reader, against plain OpenVINO and against
OpenVINO's model-protection recipe, each written in C++ (cpp/bench/ovcrypt_bench.cpp).

    .venv-test/bin/python -m benchmarks.bench_cpp            # 9 alternating triples, cold then warm page cache
    .venv-test/bin/python -m benchmarks.bench_cpp --quick    # 3 triples

The three loads, each in a fresh process:
  plain    core.compile_model("model.xml", "CPU"): OpenVINO memory-maps the weights
  ovcrypt  ovcrypt::compile_model(core, package, "dense") on the package the build hook renders
  recipe   read each whole file, AES-128-CBC decrypt it with OpenSSL (files made by `openssl enc`), then
           core.compile_model(xml_string, weights_tensor, "CPU")
The child times its load phase (ov::Core creation included) and reports its peak RSS (VmHWM); the parent
times the whole process. Runs alternate plain, ovcrypt, recipe, plain, ... The page cache is dropped before
each cold run when that is allowed (root), as benchmarks/bench.py does; the warm series runs after one
warm-up run of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench import drop_caches, fmt_size, med, openssl_version, spread  # noqa: E402
from benchmarks.models import make_dense_ir  # noqa: E402
from tests.helpers import render_folder  # noqa: E402

MiB = 1 << 20
MODES = ("plain", "ovcrypt", "recipe")


def build(work: Path) -> Path:
    import openvino as ov

    build_dir = work / "build"
    ov_cmake = Path(ov.__file__).parent / "cmake"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(REPO / "cpp"), "-B", str(build_dir), *generator, "-DCMAKE_BUILD_TYPE=Release",
                    f"-DOpenVINO_DIR={ov_cmake}", "-DOVCRYPT_BUILD_BENCH=ON", "-DOVCRYPT_BUILD_EXAMPLES=OFF"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["cmake", "--build", str(build_dir), "--target", "ovcrypt_bench", "--parallel", "2"],
                   check=True, capture_output=True)  # fmt: skip
    return build_dir / "ovcrypt_bench"


def openssl_enc(src: Path, dst: Path, key_hex: str, iv_hex: str) -> None:
    subprocess.run(["openssl", "enc", "-aes-128-cbc", "-K", key_hex, "-iv", iv_hex, "-in", str(src), "-out", str(dst)],
                   check=True)  # fmt: skip


def run(cmd: Sequence[str], env: dict[str, str], *, cold: bool) -> tuple[float, float, float]:
    """(load phase s, whole process s, peak RSS MiB) of one fresh process."""
    if cold:
        drop_caches()
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(out["load"]), wall, out["rss_kib"] / 1024


def run_phases(cmd: Sequence[str], env: dict[str, str]) -> dict[str, float]:
    """The ovcrypt load's phases (ovcrypt_bench ovcrypt-phases prints "name seconds" lines on stderr)."""
    proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, check=True)
    return {name: float(value) for name, value in (line.split() for line in proc.stderr.splitlines())}


def prepare(work: Path, bench: Path, size: int, log: Callable[[str], None]) -> tuple[dict[str, list[str]], bytes]:
    """The model, encrypted both ways; the command of each load, and the package's key."""
    log(f"generating the {fmt_size(size)} dense IR")
    xml = make_dense_ir(work / "ir" / "dense.xml", size)
    key = secrets.token_bytes(32)
    (work / "key.hex").write_text(key.hex())  # for probing the package after the run
    log("encrypting: the build hook's package, and the recipe's `openssl enc -aes-128-cbc` files")
    package = render_folder(work / "pkg" / "_ovcrypt", {"dense": xml}, key)
    recipe_key, recipe_iv = secrets.token_hex(16), secrets.token_hex(16)
    (work / "recipe").mkdir()
    for src in (xml, xml.with_suffix(".bin")):
        openssl_enc(src, work / "recipe" / f"{src.name}.enc", recipe_key, recipe_iv)
    commands = {
        "plain": [str(bench), "plain", str(xml)],
        "ovcrypt": [str(bench), "ovcrypt", str(package), "dense"],
        "recipe": [str(bench), "recipe", str(work / "recipe" / "dense.xml.enc"), str(work / "recipe" / "dense.bin.enc"),
                   recipe_key, recipe_iv],
    }  # fmt: skip
    return commands, key


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 alternating triples instead of 9")
    parser.add_argument("--pairs", type=int, help="alternating runs of each load (default 9, --quick 3)")
    parser.add_argument("--size-mib", type=int, default=512, help="weights of the dense model (a multiple of 64)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ovcrypt-bench-cpp"))
    parser.add_argument("--warm-only", action="store_true", help="do not drop the page cache (no cold series)")
    parser.add_argument("--output", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pairs = args.pairs or (3 if args.quick else 9)
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    log("building cpp/ (ovcrypt_bench)")
    bench = build(work)
    size = args.size_mib * MiB
    commands, key = prepare(work, bench, size, log)
    env = {**os.environ, "OVCRYPT_KEY": key.hex()}
    cold_possible = not args.warm_only and drop_caches()
    series = [("cold page cache", True)] if cold_possible else []
    series.append(("warm page cache", False))
    rows: list[str] = []
    for label, cold in series:
        if not cold:
            for mode in MODES:  # one warm-up run each
                run(commands[mode], env, cold=False)
        log(f"{label}: {pairs} alternating runs of {', '.join(MODES)}")
        results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in MODES}
        for _ in range(pairs):
            for mode in MODES:
                results[mode].append(run(commands[mode], env, cold=cold))
        rows += report_rows(label, results)
    log("where the ovcrypt load spends its time (warm page cache)")
    probe = [str(bench), "ovcrypt-phases", *commands["ovcrypt"][2:]]
    phases = [run_phases(probe, env) for _ in range(min(pairs, 5))]
    phase_note = "ovcrypt load phases, median (min–max) s: " + ", ".join(
        f"{name} {med([p[name] for p in phases]):.3f} ({spread([p[name] for p in phases])})" for name in phases[0]
    )
    rows_text = "\n".join(rows)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    import openvino as ov

    header = [
        f"hatch-ovcrypt C++ benchmark, {fmt_size(size)} dense fp32 IR, {pairs} alternating runs per load, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"machine: nproc {os.cpu_count()}, CPU {cpu}; openvino {ov.get_version()}; {openssl_version()}; "
        f"load average at the end {os.getloadavg()[0]:.1f}",
        "columns: median (min–max); ratios of medians: ovcrypt / plain compile_model(path), ovcrypt / recipe",
    ]
    head = ("| series | measurement | plain | ovcrypt | recipe | ovcrypt/plain | ovcrypt/recipe |\n"
            "|---|---|---|---|---|---|---|")  # fmt: skip
    report = "\n".join(header) + "\n\n" + head + "\n" + rows_text + "\n\n" + phase_note + "\n"
    print("\n" + report)
    if args.output:
        args.output.write_text(report)
    return 0


def report_rows(label: str, results: dict[str, list[tuple[float, float, float]]]) -> list[str]:
    rows = []
    for index, what, unit in ((0, "load phase", "s"), (1, "whole process", "s"), (2, "peak RSS", "MiB")):
        values = {m: [r[index] for r in results[m]] for m in MODES}
        digits = 0 if unit == "MiB" else 3

        def cell(mode: str, values: dict[str, list[float]] = values, digits: int = digits) -> str:
            v = values[mode]
            return f"{med(v):.{digits}f} ({spread(v) if digits else f'{min(v):.0f}–{max(v):.0f}'})"

        ratio_plain = med(values["ovcrypt"]) / med(values["plain"])
        ratio_recipe = med(values["ovcrypt"]) / med(values["recipe"])
        rows.append(f"| {label} | {what}, {unit} | {cell('plain')} | {cell('ovcrypt')} | {cell('recipe')} | "
                    f"{ratio_plain:.2f}x | {ratio_recipe:.2f}x |")  # fmt: skip
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
