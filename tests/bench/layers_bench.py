#!/usr/bin/env python3
"""Benchmark: what layering saves. A real-sized app (this machine's Python
3.11 with its standard library and every library it and its C modules
load) over a base made of the same distribution (a shell, coreutils and the
common libraries), as OCI images built on each other, then:
  the app as a RALF package layered on the base package (--depends-on),
  the same app as one self-contained package,
  the same app as a Dobby bundle for this machine (libraries from the box),
with each package's EROFS lz4 content, and writes the sizes into
docs/BENCHMARKS.md.

Usage: tests/bench/layers_bench.py [--workdir DIR] [--no-write]
"""

import argparse
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchdoc import ROOT, machine, write_section
from unpack_bench import sha256_file, write_blob

BINARY = ROOT / "target/release/bundlegen"
PROBE = ROOT / "target/release/platform-probe"
BEGIN, END = "<!-- layers-bench:begin -->", "<!-- layers-bench:end -->"
BASE_PROGRAMS = ["/bin/sh", "/bin/bash", "/bin/ls", "/bin/cat", "/usr/bin/env", "/bin/cp", "/bin/mv", "/bin/rm"]
BASE_LIBRARIES = ["libssl.so.3", "libcrypto.so.3", "libz.so.1", "libffi.so.8", "libexpat.so.1", "libbz2.so.1.0",
                  "liblzma.so.5", "libstdc++.so.6", "libgcc_s.so.1", "libsqlite3.so.0", "libreadline.so.8",
                  "libncursesw.so.6", "libtinfo.so.6", "libuuid.so.1"]


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, **kwargs)


def closure(paths):
    """Files the loader would load for these programs and libraries (ldd), with them."""
    found = set()
    for path in paths:
        found.add(str(Path(path).resolve()) if Path(path).is_symlink() and path.endswith(".so") else path)
        result = subprocess.run(["ldd", path], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            part = line.split("=>")[-1].strip().split(" ")[0]
            if part.startswith("/"):
                found.add(part)
    return sorted(found)


def layer(work, name, files):
    """A gzip layer of `files` (host paths, kept at their paths)."""
    listing = work / f"{name}.list"
    listing.write_text("\n".join(f.lstrip("/") for f in files) + "\n")
    tar_path = work / f"{name}.tar"
    sh("tar", "-C", "/", "--hard-dereference", "-cf", str(tar_path), "-T", str(listing))
    diff_id = sha256_file(tar_path)
    sh("pigz", "-6", "-f", str(tar_path))
    return diff_id, work / f"{name}.tar.gz"


def image(work, name, layers, cmd):
    layout = work / name
    shutil.rmtree(layout, ignore_errors=True)
    (layout / "blobs/sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descriptors, diff_ids = [], []
    for diff_id, path in layers:
        copy = work / (path.name + ".copy")
        shutil.copy(path, copy)
        digest, size = write_blob(layout, data_path=copy)
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
        diff_ids.append(diff_id)
    config = json.dumps({"created": "2026-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
                         "config": {"Cmd": cmd}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_digest, config_size = write_blob(layout, data=config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
                           "layers": descriptors}).encode()
    digest, size = write_blob(layout, data=manifest)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return f"oci:{layout}:latest"


def package_size(path):
    info = json.loads(subprocess.run([str(BINARY), "package-info", "--json", str(path)], capture_output=True, text=True, check=True).stdout)
    return path.stat().st_size, info["content"]["size"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/var/tmp/bundlegen-layers")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sh("cargo", "build", "--release", "-q", "-p", "bundlegen", "-p", "platform-probe", cwd=ROOT)
    libdir = Path("/usr/lib/x86_64-linux-gnu")
    base_files = closure(BASE_PROGRAMS + [str(libdir / l) for l in BASE_LIBRARIES if (libdir / l).exists()])
    python_roots = ["/usr/bin/python3.11"] + [str(p) for p in Path("/usr/lib/python3.11/lib-dynload").glob("*.so")]
    python_files = sorted(set(closure(python_roots)) | {"/usr/lib/python3.11"})
    base_layer = layer(work, "base", base_files)
    app_layer = layer(work, "python", python_files)
    base_image = image(work, "base-image", [base_layer], ["/bin/sh"])
    app_image = image(work, "app-image", [base_layer, app_layer], ["/usr/bin/python3.11"])
    base_config, app_config = work / "base.json", work / "app.json"
    base_config.write_text(json.dumps({"id": "os.base", "specVersion": "1.1.0", "version": "12.0", "packageType": "base", "entryPoint": "bin/sh"}))
    app_config.write_text(json.dumps({"id": "org.python.app", "specVersion": "1.1.0", "version": "3.11", "packageType": "application", "entryPoint": "usr/bin/python3.11"}))
    common = ["package", "-y", "--arch", "amd64", "--content", "erofs.lz4"]
    sh(str(BINARY), *common, "--config", str(base_config), base_image, str(work / "base.ralf"))
    layered = subprocess.run([str(BINARY), *common, "--config", str(app_config), "--depends-on", str(work / "base.ralf"),
                              app_image, str(work / "app-layered.ralf")], capture_output=True, text=True, check=True).stdout
    sh(str(BINARY), *common, "--config", str(app_config), app_image, str(work / "app-alone.ralf"))
    # The Dobby bundle: a template for this machine, with its probe report.
    templates = work / "templates"
    templates.mkdir()
    template = json.loads((ROOT.parent / "shared/conformance/bundlegen/templates/rpi3_reference.json").read_text())
    template.update({"platformName": "thishost", "arch": {"arch": "amd64"}})
    template.pop("gpu", None)
    (templates / "thishost.json").write_text(json.dumps(template))
    sh(str(PROBE), "-q", "-o", str(templates / "thishost_probe.json"))
    metadata = work / "metadata.json"
    metadata.write_text(json.dumps({"id": "org.python.app", "type": "application/vnd.rdk-app.dac.native", "graphics": False,
                                    "network": {"type": "open"}, "storage": {}, "resources": {"ram": "256M"}}))
    sh(str(BINARY), "generate", "-y", "-p", "thishost", "-s", str(templates), "-a", str(metadata), app_image, str(work / "bundle"))
    bundle_size = (work / "bundle.tar.gz").stat().st_size
    uncompressed = sum(p.stat().st_size for p in (work / "bundle" / "rootfs").rglob("*") if p.is_file() and not p.is_symlink())
    rows = [("base package (os.base)", *package_size(work / "base.ralf")),
            ("app package layered on the base (--depends-on)", *package_size(work / "app-layered.ralf")),
            ("the same app as one self-contained package", *package_size(work / "app-alone.ralf"))]
    lines = ["", f"## Layered RALF packages ({datetime.date.today().isoformat()})", "", f"Machine: {machine(work)}.", "",
             f"Command: `tests/bench/layers_bench.py --workdir {work}`. The app is this machine's Python 3.11 "
             f"(`/usr/lib/python3.11` and the libraries it and its C modules load: {len(python_files)} paths); the base "
             f"a shell, coreutils and the common libraries of the same distribution ({len(base_files)} files). Both are "
             "OCI images, the app's built on the base's. EROFS lz4 content throughout.", "",
             "| what | `.ralf` bytes | content bytes |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {total} | {content} |" for name, total, content in rows]
    lines += [f"| the same app as a Dobby bundle for this machine (`.tar.gz`, libraries from the box) | {bundle_size} | {uncompressed} (rootfs) |", "",
              "What the layered package left out: " + next((l for l in layered.splitlines() if l.startswith("left out")), "?") + "."]
    if args.no_write:
        print("\n".join([BEGIN, *lines, END]))
    else:
        write_section(BEGIN, END, lines)


if __name__ == "__main__":
    sys.exit(main())
