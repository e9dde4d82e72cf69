"""How much memory converting an N MiB ONNX model to IR in memory takes (issue 11), each in a fresh process.

    .venv-test/bin/python -m benchmarks.convert_memory               # 64 and 256 MiB; about 2 min on 2 cores
    .venv-test/bin/python -m benchmarks.convert_memory --sizes 64    # one size

Needs the `onnx` package (the test extra). The model is a chain of layers with random fp32 weights (1024x1024,
4 MiB each), saved with its weights in the .onnx ("embedded") or in one external data file ("external"):
MatMul layers (OpenVINO's conversion stores MatMul weights transposed, a new copy of each) and Add + Relu layers
(whose constants it keeps as they are). Each row converts in a fresh child process that imports openvino and
hatch_ovcrypt.sources.convert, then waits; the parent samples the child's /proc every 2 ms while it runs:

- held: anonymous memory (RssAnon) + the size of each memfd it has open or mapped (counted once), i.e. what
  the conversion keeps in memory, the IR's memory-backed files included (memfd pages are not in RSS until
  they are mapped and read). Page cache of the source file is not counted: it is the kernel's, and reclaimable.
- peak RSS: the child's VmHWM (file-backed mappings of the source included).
Both are reported above the baseline taken after the imports. The child then reads the whole .bin in
1 MiB pieces, as the writer's encryption passes do, and releases it.

"ovc to disk" is the same conversion by plain OpenVINO, `ov.save_model(ov.convert_model(src), path)` into a
temporary folder on disk, for comparison (its .bin goes to the page cache, so it is not counted as held).
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
LAYER = 1024  # weights per layer: LAYER x LAYER fp32 = 4 MiB

CHILD = textwrap.dedent(
    """
    import hashlib, sys, tempfile
    from pathlib import Path
    import openvino as ov
    from hatch_ovcrypt.sources.convert import ConversionOptions, convert_to_ir
    source, mode = Path(sys.argv[1]), sys.argv[2]
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "ovc-disk":
        with tempfile.TemporaryDirectory() as out:
            ov.save_model(ov.convert_model(str(source)), str(Path(out) / "m.xml"))
    else:
        with convert_to_ir(source, ConversionOptions(compress_to_fp16=mode == "fp16")) as ir:
            digest = hashlib.sha256()
            source_ = ir.bin_source()
            for chunk in source_.chunks(1 << 20):
                digest.update(chunk)
            del source_, chunk
    print("done", flush=True)
    sys.stdin.readline()
    """
)


@dataclass
class Sample:
    anon: int = 0  # RssAnon
    memfd: int = 0  # the memfds it has open or mapped, each counted once
    hwm: int = 0  # VmHWM

    @property
    def held(self) -> int:
        return self.anon + self.memfd


def read_sample(pid: int) -> Sample:
    """The child's memory now. A memfd shows up several times (our descriptor, the one OpenVINO opened through
    /proc/self/fd/N, the read-only mapping): each inode is counted once, at the largest size seen."""
    sample = Sample()
    memfds: dict[int, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "RssAnon":
                sample.anon = int(value.split()[0]) << 10
            elif key == "VmHWM":
                sample.hwm = int(value.split()[0]) << 10
        fds = Path(f"/proc/{pid}/fd")
        for fd in os.listdir(fds):
            try:
                if os.readlink(fds / fd).startswith("/memfd:"):
                    st = os.stat(fds / fd)
                    memfds[st.st_ino] = max(memfds.get(st.st_ino, 0), st.st_size)
            except OSError:
                continue
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/memfd:"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                memfds[int(parts[4])] = max(memfds.get(int(parts[4]), 0), hi - lo)
    except OSError:
        pass
    sample.memfd = sum(memfds.values())
    return sample


def measure(source: Path, mode: str) -> tuple[int, int, float]:
    """(peak held above baseline, peak RSS above baseline, seconds) for one conversion in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(source), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    base = read_sample(child.pid)
    peak_held = base.held
    started = time.perf_counter()
    child.stdin.write("\n")
    child.stdin.flush()
    while True:
        peak_held = max(peak_held, read_sample(child.pid).held)
        if select.select([child.stdout], [], [], 0.002)[0]:
            line = child.stdout.readline()
            if line.strip() == "done":
                break
            raise RuntimeError(f"the child failed (exit {child.wait()})")
    seconds = time.perf_counter() - started
    end = read_sample(child.pid)
    child.stdin.write("\n")
    child.stdin.flush()
    child.wait()
    return peak_held - base.held, end.hwm - base.hwm, seconds


def make_model(folder: Path, mib: int, external: bool, op: str = "MatMul") -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    layers = max(1, mib * MIB // (4 * LAYER * LAYER))
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((LAYER, LAYER), dtype=np.float32) / np.float32(32)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        if op == "MatMul":
            nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out]))
        else:  # Relu between the Adds keeps OpenVINO from folding the constants into one
            nodes += [helper.make_node("Add", [prev, f"w{i}"], [f"a{i}"]), helper.make_node("Relu", [f"a{i}"], [out])]
        prev = out
    rows = 1 if op == "MatMul" else LAYER  # the first Add broadcasts [1, LAYER] to [LAYER, LAYER] in the first layer
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, LAYER])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, LAYER])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / f"{op}{mib}{'x' if external else 'e'}.onnx"
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="model sizes in MiB of fp32 weights")
    parser.add_argument(
        "--ops", nargs="+", default=["MatMul", "AddRelu"], choices=["MatMul", "AddRelu"], help="layer op"
    )
    args = parser.parse_args()
    print(f"{'model':>29} {'output':>12} {'held':>16} {'peak RSS':>16} {'time':>7}")
    with tempfile.TemporaryDirectory(prefix="convert-memory-") as tmp:
        for op, mib, external in ((o, m, e) for o in args.ops for m in args.sizes for e in (False, True)):
            source = make_model(Path(tmp), mib, external, op)
            label = f"{op} {mib} MiB {'external' if external else 'embedded'}"
            for mode, output in (("fp16", "IR fp16"), ("fp32", "IR fp32"), ("ovc-disk", "ovc to disk")):
                held, rss, seconds = measure(source, mode)
                print(
                    f"{label:>29} {output:>12} {held / MIB:7.0f} MiB {held / (mib * MIB):4.2f}N "
                    f"{rss / MIB:7.0f} MiB {rss / (mib * MIB):4.2f}N {seconds:6.1f}s",
                    flush=True,
                )
            for path in Path(tmp).iterdir():
                path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
