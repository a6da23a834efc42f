#!/usr/bin/env python3
"""Benchmark: OCI image -> bundle, ours against umoci and tar+gzip/pigz.

Builds two OCI image layouts in WORKDIR:
  large: ~900 MB from this machine's /usr in three gzip layers (plus a small
         fourth layer with whiteouts), like a big app image;
  small: the 1.9 MB conformance image (../shared/conformance).
Then times, best of --runs, wall and CPU seconds:
  ours unpack          bundlegen unpack --format dir
  ours image->tar.gz   bundlegen unpack --format tar.gz --archive-only
  ours image->tar.zst  bundlegen unpack --format tar.zst --archive-only
  ours default         bundlegen unpack --format tar.gz (directory kept)
  umoci unpack         umoci unpack --rootless
  umoci + gzip         umoci unpack --rootless, then tar -c | gzip -6 (the anchor)
  tar x + gzip         tar -xzf of each layer, then tar -c | gzip -6
  tar x + pigz         tar -I pigz -xf of each layer, then tar -c | pigz -6
and writes a Markdown section into docs/BENCHMARKS.md.

Usage: tests/bench/unpack_bench.py [--workdir DIR] [--label NAME] [--runs N] [--no-write]
(one section per label, e.g. `--workdir /dev/shm/b --label tmpfs` and
`--workdir /var/tmp/b --label disk`)
"""

import argparse
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchdoc import ROOT, machine, timed, write_section

CONFORMANCE_IMAGE = ROOT.parent / "shared/conformance/bundlegen/images/dac-image-wayland-egl-test-oci"
BINARY = ROOT / "target/release/bundlegen"
MARK = "<!-- unpack-bench:{label}:{end} -->"


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, **kwargs)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def write_blob(layout, data_path=None, data=None):
    if data is not None:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (layout / "blobs/sha256" / digest[7:]).write_bytes(data)
        return digest, len(data)
    digest = sha256_file(data_path)
    shutil.move(data_path, layout / "blobs/sha256" / digest[7:])
    return digest, (layout / "blobs/sha256" / digest[7:]).stat().st_size


def build_large_image(work):
    layout = work / "large"
    if (layout / "index.json").exists():
        return layout
    (layout / "blobs/sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layer_sources = [
        ["--exclude=usr/share/man", "--exclude=usr/share/package-lists", "usr/share"],
        ["usr/sbin", "usr/libexec", "usr/include"],
        ["usr/bin"],
    ]
    descriptors, diff_ids = [], []
    for n, sources in enumerate(layer_sources):
        tar_path = work / f"layer{n}.tar"
        sh("tar", "-C", "/", "-cf", str(tar_path), *sources)
        diff_ids.append(sha256_file(tar_path))
        sh("pigz", "-6", "-f", str(tar_path))
        digest, size = write_blob(layout, data_path=work / f"layer{n}.tar.gz")
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    # A small top layer: whiteouts and an opaque directory, as real images have.
    top = work / "top"
    shutil.rmtree(top, ignore_errors=True)
    (top / "usr/share/doc").mkdir(parents=True)
    (top / "usr/include").mkdir(parents=True)
    (top / "usr/share/doc/.wh..wh..opq").write_text("")
    (top / "usr/share/doc/README").write_text("replaced docs\n")
    (top / "usr/include/.wh.linux").write_text("")
    tar_path = work / "layer3.tar"
    sh("tar", "-C", str(top), "-cf", str(tar_path), "usr")
    diff_ids.append(sha256_file(tar_path))
    sh("pigz", "-6", "-f", str(tar_path))
    digest, size = write_blob(layout, data_path=work / "layer3.tar.gz")
    descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    config = json.dumps({
        "created": "2026-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/usr/bin/true"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()
    config_digest, config_size = write_blob(layout, data=config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    }).encode()
    manifest_digest, manifest_size = write_blob(layout, data=manifest)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return layout


TARGETS = ("Targets: the small image to `.tar.gz` in ≤ 0.06 s on tmpfs and ≤ 0.12 s on disk; the large one in ≤ 10 s "
           "on disk to `.tar.gz` and ≤ 6 s to `.tar.zst`, ≤ 0.2× the `umoci unpack` + `tar c | gzip -6` path. An archive "
           "without the bundle directory (`--archive-only`, the service's jobs) is assembled in memory: the rootfs "
           "tree is never written, synced and removed; file contents go to memory, past 16 MiB to one unnamed spool "
           "file in the work directory. With the directory kept too, it is written out from memory while the archive is "
           "compressed; `unpack to a directory` (no archive) unpacks straight into it.")


def layer_blobs(layout):
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    return [layout / "blobs/sha256" / l["digest"][7:] for l in manifest["layers"]]


def seconds(value):
    """Milliseconds matter below a second."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def sizes(layout):
    blobs = layer_blobs(layout)
    compressed = sum(b.stat().st_size for b in blobs)
    uncompressed = 0
    for blob in blobs:
        result = subprocess.run(["sh", "-c", f"zcat {blob} | wc -c"], capture_output=True, text=True, check=True)
        uncompressed += int(result.stdout)
    return len(blobs), compressed, uncompressed


def contenders(layout, work, tag):
    out = work / "out"
    blobs = " ".join(str(b) for b in layer_blobs(layout))
    image = f"oci:{layout}:{tag}"
    arch = "--arch armv7" if layout.name == "small" else "--arch amd64"
    extract_all = lambda tool: f"mkdir -p {out}/rootfs && for b in {blobs}; do tar {tool} -xf $b -C {out}/rootfs; done"
    return [
        ("ours: unpack to a directory", f"{BINARY} unpack -y --format dir {arch} {image} {out}/bundle"),
        ("ours: image → bundle .tar.gz", f"{BINARY} unpack -y --archive-only --format tar.gz {arch} {image} {out}/bundle"),
        ("ours: image → bundle .tar.zst", f"{BINARY} unpack -y --archive-only --format tar.zst {arch} {image} {out}/bundle"),
        ("ours: image → bundle directory + .tar.gz (the default)",
         f"{BINARY} unpack -y --format tar.gz {arch} {image} {out}/bundle"),
        ("ours: image → bundle .tar.gz, assembled on tmpfs (--work-dir /dev/shm)",
         f"{BINARY} unpack -y --archive-only --work-dir /dev/shm --format tar.gz {arch} {image} {out}/bundle"),
        ("umoci unpack --rootless", f"umoci unpack --rootless --image {layout}:{tag} {out}/umoci"),
        ("umoci unpack --rootless + tar c + gzip -6",
         f"umoci unpack --rootless --image {layout}:{tag} {out}/umoci"
         f" && tar -C {out}/umoci/rootfs -cf - . | gzip -6 > {out}/u.tar.gz"),
        ("tar x (gzip) + tar c + gzip -6", extract_all("-z") + f" && tar -C {out}/rootfs -cf - . | gzip -6 > {out}/x.tar.gz"),
        ("tar x (pigz) + tar c + pigz -6", extract_all("-I pigz") + f" && tar -C {out}/rootfs -cf - . | pigz -6 > {out}/x.tar.gz"),
    ], out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/var/tmp/bundlegen-bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--label", default="disk", help="names this run's section in docs/BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/BENCHMARKS.md")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sh("cargo", "build", "--release", "-q", "-p", "bundlegen", cwd=ROOT)

    small = work / "small"
    if not small.exists():
        shutil.copytree(CONFORMANCE_IMAGE, small)
        sh("chmod", "-R", "u+w", str(small))
    images = [("large", build_large_image(work), "latest"), ("small", small, "latest")]

    begin, end = MARK.format(label=args.label, end="begin"), MARK.format(label=args.label, end="end")
    lines = [begin, "", f"## Image → bundle, work directory on {args.label} ({datetime.date.today().isoformat()})", "",
             f"Machine: {machine(work)}.", "",
             f"Command: `tests/bench/unpack_bench.py --workdir {work} --label {args.label} --runs {args.runs}`; "
             f"best of {args.runs} runs; CPU = user + system "
             "seconds of all processes. BundleGen itself is not installed here; its study measured ~270 s for a "
             "similar 800 MB image (≈85 % of it in single-threaded gzip -9) and ~30 s for its umoci step.", ""]
    for name, layout, tag in images:
        count, compressed, uncompressed = sizes(layout)
        lines += [f"### {name} image: {count} layers, {compressed / 1e6:.1f} MB compressed, {uncompressed / 1e6:.1f} MB uncompressed", "",
                  "| tool | wall s | CPU s | MB/s (uncompressed, wall) |", "| --- | ---: | ---: | ---: |"]
        commands, out = contenders(layout, work, tag)
        walls = {}
        for label, command in commands:
            cleanup = lambda: (shutil.rmtree(out, ignore_errors=True), out.mkdir(parents=True))
            results = [timed(command, cleanup) for _ in range(args.runs)]
            wall, cpu = min(results)
            walls[label] = wall
            lines.append(f"| {label} | {seconds(wall)} | {seconds(cpu)} | {uncompressed / 1e6 / wall:.0f} |")
            print(lines[-1], flush=True)
        shutil.rmtree(out, ignore_errors=True)
        ours = walls["ours: image → bundle .tar.gz"]
        anchor = ours / walls["umoci unpack --rootless + tar c + gzip -6"]
        tar_x = ours / walls["tar x (gzip) + tar c + gzip -6"]
        lines += ["", f"ours .tar.gz in the same run: {anchor:.2f}× of `umoci unpack` + `tar c | gzip -6` (the "
                  f"issue's anchor), {tar_x:.2f}× of `tar x` + `tar c | gzip -6`.", ""]
        print(lines[-2], flush=True)
    lines += [TARGETS, ""]
    if args.no_write:
        print("\n".join(lines + [end]))
    else:
        write_section(begin, end, lines[1:])


if __name__ == "__main__":
    sys.exit(main())
