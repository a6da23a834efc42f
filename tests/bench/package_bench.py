#!/usr/bin/env python3
"""Benchmark: OCI image -> RALF package, and our EROFS writer against
mkfs.erofs + veritysetup on the same tree.

Uses the ~900 MB image of unpack_bench.py (built in WORKDIR if missing) and
the 1.9 MB conformance image. Times, best of --runs (wall and CPU seconds):
  ours: image -> .ralf       bundlegen package --content KIND, each kind
  ours: tree -> EROFS+verity the content step alone (examples/erofs_image.rs)
  mkfs.erofs + veritysetup   mkfs.erofs (erofs-utils 1.5, -zlz4hc -C4096, or
                             uncompressed) then veritysetup format, same tree
and the image sizes, then writes a Markdown section into docs/BENCHMARKS.md.

Usage: tests/bench/package_bench.py [--workdir DIR] [--runs N] [--no-write]
"""

import argparse
import datetime
import shutil
import subprocess
import sys
from pathlib import Path

from benchdoc import ROOT, machine, timed, write_section
from unpack_bench import CONFORMANCE_IMAGE, build_large_image, sizes

BINARY = ROOT / "target/release/bundlegen"
EXAMPLE = ROOT / "target/release/examples/erofs_image"
BEGIN, END = "<!-- package-bench:begin -->", "<!-- package-bench:end -->"
KINDS = ["tar", "tar+gzip", "tar+zstd", "erofs.lz4", "erofs.zstd", "erofs.nocmpr"]


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/var/tmp/bundlegen-bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sh("cargo", "build", "--release", "-q", "-p", "bundlegen", cwd=ROOT)
    sh("cargo", "build", "--release", "-q", "-p", "bundlegen-core", "--example", "erofs_image", cwd=ROOT)
    small = work / "small"
    if not small.exists():
        shutil.copytree(CONFORMANCE_IMAGE, small)
        sh("chmod", "-R", "u+w", str(small))
    images = [("large", build_large_image(work), "--arch amd64"), ("small", small, "--arch arm --variant v7")]
    version = "mkfs.erofs " + subprocess.run(["dpkg-query", "-W", "-f=${Version}", "erofs-utils"], capture_output=True, text=True).stdout
    lines = ["", f"## Image → RALF package ({datetime.date.today().isoformat()})", "",
             f"Machine: {machine(work)}.", "",
             f"Command: `tests/bench/package_bench.py --workdir {work} --runs {args.runs}`; best of {args.runs} runs; "
             f"CPU = user + system seconds of all processes. Peers: {version}, veritysetup "
             f"{subprocess.run(['veritysetup', '--version'], capture_output=True, text=True).stdout.split()[1]}. "
             "ralfpack publishes no figures and cannot be built here (its build downloads erofs-utils).", ""]
    out = work / "package-out"
    for name, layout, arch in images:
        count, compressed, uncompressed = sizes(layout)
        tree = work / f"{name}-tree"
        if not tree.exists():
            sh(str(BINARY), "unpack", "-y", "--format", "dir", *arch.split(), f"oci:{layout}:latest", str(tree))
        rootfs = tree / "rootfs"
        lines += [f"### {name} image: {count} layers, {compressed / 1e6:.1f} MB compressed, {uncompressed / 1e6:.1f} MB uncompressed", "",
                  "| what | wall s | CPU s | output bytes |", "| --- | ---: | ---: | ---: |"]
        contenders = [(f"ours: image → .ralf, {kind}",
                       f"{BINARY} package -y --content {kind} {arch} -x bench.app --package-version 1.0 "
                       f"--config {write_config(work)} oci:{layout}:latest {out}/app.ralf", out / "app.ralf")
                      for kind in KINDS]
        for compression, flags in [("lz4", "-zlz4hc -C4096"), ("none", "")]:
            contenders.append((f"ours: tree → EROFS {compression} + verity tree",
                               f"{EXAMPLE} {rootfs} {out}/ours.img {compression}", out / "ours.img"))
            contenders.append((f"mkfs.erofs {flags or '(uncompressed)'} + veritysetup format, same tree",
                               f"mkfs.erofs {flags} -T0 --all-root --quiet {out}/mkfs.img {rootfs} && "
                               f"veritysetup format --hash-offset=$(stat -c %s {out}/mkfs.img) {out}/mkfs.img {out}/mkfs.img",
                               out / "mkfs.img"))
        for label, command, product in contenders:
            def cleanup():
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
            results = [timed(command, cleanup) for _ in range(args.runs)]
            wall, cpu = min(results)
            lines.append(f"| {label} | {wall:.2f} | {cpu:.2f} | {product.stat().st_size} |")
            print(lines[-1], flush=True)
        shutil.rmtree(out, ignore_errors=True)
        lines.append("")
    if args.no_write:
        print("\n".join([BEGIN, *lines, END]))
    else:
        write_section(BEGIN, END, lines)


def write_config(work):
    config = work / "package.json"
    config.write_text('{"id":"bench.app","specVersion":"1.1.0","version":"1.0","packageType":"application","entryPoint":"usr/bin/true"}')
    return config


if __name__ == "__main__":
    sys.exit(main())
