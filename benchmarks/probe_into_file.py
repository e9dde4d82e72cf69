"""How a memory file is best filled with decrypted weights: the two routes of the runtime side by side.

    .venv/bin/python -m benchmarks.probe_into_file            # 5 alternating rounds
    .venv/bin/python -m benchmarks.probe_into_file --rounds 9

The model is bench_memfolder's (274 MiB of fp32 weights in openvino_model.bin, made and cached by it),
encrypted into a rendered product. Each round decrypts that file into a new memfd both ways, alternating, with
one worker and with the default number, warm page cache, in this process:
- mapped: read_and_decrypt reads the ciphertext into a shared mapping of the memfd and decrypts it in place
  (each fresh page takes a write fault);
- pwrite: decrypt_into_file (_format/into_file.py, the route memory folders use) decrypts a segment at a
  time in a small buffer and writes each authenticated segment with pwrite.
Prints the median and min–max seconds of each, and their ratio.
"""

from __future__ import annotations

import argparse
import importlib
import mmap
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench import render_installed, spread  # noqa: E402
from benchmarks.bench_memfolder import DEFAULT_MODEL, NAME, PACKAGE, make_model  # noqa: E402

WEIGHTS = "openvino_model.bin"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ovcrypt-probe-into-file"))
    args = parser.parse_args(argv)
    folder = make_model(DEFAULT_MODEL, 17)
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    key = secrets.token_bytes(32)
    render_installed(work / "site", PACKAGE, {NAME: folder}, key)
    sys.path.insert(0, str(work / "site"))
    os.environ["OVCRYPT_KEY"] = key.hex()
    runtime = importlib.import_module(f"{PACKAGE}._ovcrypt")
    into_file = importlib.import_module(f"{PACKAGE}._ovcrypt._format.into_file")
    reader = importlib.import_module(f"{PACKAGE}._ovcrypt._format.reader")
    files = runtime._get().files

    def timed(route: Callable[..., object], threads: int | None) -> float:
        with files._open(NAME, WEIGHTS) as (f, (header, unlock), label):
            out = os.memfd_create("probe", os.MFD_CLOEXEC)
            try:
                os.ftruncate(out, header.plaintext_length)
                start = time.perf_counter()
                route(f, header, label, unlock, out, threads)
                return time.perf_counter() - start
            finally:
                os.close(out)

    def mapped(f: object, header: object, label: str, unlock: object, out: int, threads: int | None) -> None:
        size = os.fstat(out).st_size
        with mmap.mmap(out, size, flags=mmap.MAP_SHARED) as mapping, memoryview(mapping) as view:
            reader.read_and_decrypt(f, header, label, unlock, view, threads=threads)

    def pwrite(f: object, header: object, label: str, unlock: object, out: int, threads: int | None) -> None:
        into_file.decrypt_into_file(f.fileno(), header, label, unlock, out, threads=threads)  # type: ignore[attr-defined]

    print(f"{WEIGHTS} of {folder}: {(folder / WEIGHTS).stat().st_size / (1 << 20):.0f} MiB, {args.rounds} rounds")
    for threads in (1, None):
        got: dict[str, list[float]] = {"mapped": [], "pwrite": []}
        timed(mapped, threads), timed(pwrite, threads)  # untimed: warm the page cache and the imports
        for _ in range(args.rounds):
            got["mapped"].append(timed(mapped, threads))
            got["pwrite"].append(timed(pwrite, threads))
        m, p = statistics.median(got["mapped"]), statistics.median(got["pwrite"])
        workers = "1 worker" if threads == 1 else f"{reader.default_threads()} workers (default)"
        print(f"{workers}: mapped {m:.3f} s ({spread(got['mapped'])}), pwrite {p:.3f} s ({spread(got['pwrite'])}), "
              f"pwrite/mapped {p / m:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
