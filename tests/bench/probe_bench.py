#!/usr/bin/env python3
"""Benchmark: a full platform probe of this machine's libraries, against the
readelf approach of meta-cmf's generate_libs_json (two readelf runs per
library file); a re-probe with `--cache` when nothing changed (what the
agent does at each start); and a probe of the conformance image's arm rootfs.

Writes a Markdown section into docs/BENCHMARKS.md.

Usage: tests/bench/probe_bench.py [--runs N] [--no-write]
"""

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import ROOT, machine, timed_process, write_section

PROBE = ROOT / "target/release/platform-probe"
BUNDLEGEN = ROOT / "target/release/bundlegen"
IMAGE = ROOT.parent / "shared/conformance/bundlegen/images/dac-image-wayland-egl-test-oci"
BEGIN, END = "<!-- probe-bench:begin -->", "<!-- probe-bench:end -->"


def readelf_all(paths):
    """What generate_libs_json does per file: `readelf -V` and `readelf -d`."""
    start = time.perf_counter()
    for path in paths:
        for flag in ("-V", "-d"):
            subprocess.run(["readelf", flag, "-W", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/BENCHMARKS.md")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "platform-probe", "-p", "bundlegen"], check=True, cwd=ROOT)

    report = json.loads(subprocess.run([PROBE, "-q"], check=True, capture_output=True).stdout)
    libraries = report["libraries"]
    names = sum(len(l["names"]) for l in libraries)
    megabytes = sum(l["size"] for l in libraries) / 1e6

    live = [timed_process([str(PROBE), "-q", "-o", "/dev/null"]) for _ in range(args.runs)]
    wall, cpu, _ = min(live)
    memory = max(m for _, _, m in live)
    readelf = readelf_all([l["path"] for l in libraries])
    with tempfile.TemporaryDirectory() as work:
        cache = Path(work) / "probe-cache.json"
        subprocess.run([PROBE, "-q", "--cache", str(cache), "-o", "/dev/null"], check=True)
        cached = [timed_process([str(PROBE), "-q", "--cache", str(cache), "-o", "/dev/null"]) for _ in range(args.runs)]
        cached_wall, cached_cpu, _ = min(cached)
        cached_memory = max(m for _, _, m in cached)

    with tempfile.TemporaryDirectory() as work:
        bundle = Path(work) / "bundle"
        subprocess.run([BUNDLEGEN, "unpack", "-y", "--format", "dir", f"oci:{IMAGE}", str(bundle)],
                       check=True, capture_output=True)
        rootfs = bundle / "rootfs"
        arm = json.loads(subprocess.run([PROBE, "-q", "--root", str(rootfs)], check=True, capture_output=True).stdout)
        arm_runs = [timed_process([str(PROBE), "-q", "--root", str(rootfs), "-o", "/dev/null"]) for _ in range(args.runs)]
        arm_wall, arm_cpu, arm_memory = min(arm_runs)
        shutil.rmtree(bundle)

    lines = ["", f"## Platform probe ({datetime.date.today().isoformat()})", "",
             f"Machine: {machine(ROOT)}.", "",
             f"Command: `tests/bench/probe_bench.py --runs {args.runs}`; best of {args.runs} runs (page cache warm); "
             "CPU = user + system seconds; memory = peak resident set.", "",
             "| what | libraries (names) | MB read and hashed | wall s | CPU s | peak MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: |",
             f"| `platform-probe` of this machine (`/`) | {len(libraries)} ({names}) | {megabytes:.0f} | {wall:.2f} | {cpu:.2f} | {memory:.0f} |",
             f"| readelf -V + readelf -d per library (generate_libs_json's way), same files | {len(libraries)} | – | {readelf:.2f} | – | – |",
             f"| `platform-probe --cache FILE` of this machine, nothing changed since the last | {len(libraries)} ({names}) | 0 "
             f"| {cached_wall:.3f} | {cached_cpu:.3f} | {cached_memory:.0f} |",
             f"| `platform-probe --root` of the conformance image's arm rootfs | {len(arm['libraries'])} "
             f"({sum(len(l['names']) for l in arm['libraries'])}) | {sum(l['size'] for l in arm['libraries']) / 1e6:.1f} "
             f"| {arm_wall:.3f} | {arm_cpu:.3f} | {arm_memory:.0f} |",
             "",
             "Targets: a full probe of this machine's libraries under 1 s; a re-probe with nothing changed under "
             "0.1 s (the agent keeps the cache in its state directory). Most of a full probe is reading and "
             "hashing (sha256) every library file; the probe reads each real file once, on all cores, so its "
             "peak memory is about the largest library per core. The reference study's Python port of "
             "generate_libs_json (readelf plus regex parsing per file) took ~21 s for ~940 libraries here.", ""]
    if args.no_write:
        print("\n".join([BEGIN, *lines, END]))
    else:
        write_section(BEGIN, END, lines)


if __name__ == "__main__":
    sys.exit(main())
