#!/usr/bin/env python3
"""Benchmark: a RALF package against a bundle on the box.

The same app of about 200 MB compressed (this machine's shell, 100 MB of
incompressible data and about 300 MB of this machine's libraries; its
program writes a line to a file and sleeps) as
  - a `.tar.gz` bundle (plain OCI, so the Dobby test double runs it with crun),
  - a signed EROFS lz4 `.ralf` (made by `bundlegen package`),
each installed by the agent (`--profile device`, the box's build) through
its D-Bus API from a loopback HTTP server, then launched through the Dobby
test double with real crun, measuring:
  - install: download + sha256 + unpack + fsync + rename (bundle) against
    download + sha256 + signature and blob digests + fsync + rename (package);
  - Launch to the app's first output, for the first launch after the
    install (for the package: with the userspace dm-verity check of every
    block) and for a later one;
  - mount + overlay + config.json: the agent's own "instance assembled" figure;
  - disk used by the installed version.
Needs root (loop devices, mounts), crun and dbus-daemon.

Writes a Markdown section into docs/BENCHMARKS.md.

Usage: tests/bench/agent_package_bench.py [--runs N] [--no-write]
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from agent_bench import QuietHandler, busctl, call, serve, start_bus  # noqa: F401
from benchdoc import ROOT, machine, write_section

AGENT = ROOT / "target/device/stb-agent"
DOBBY = ROOT / "target/release/dobby-test-double"
BUNDLEGEN = ROOT / "target/release/bundlegen"
BEGIN, END = "<!-- agent-package-bench:begin -->", "<!-- agent-package-bench:end -->"
APP = "com.bench.app"
SCRIPT = "#!/bin/sh\necho started > {out}\nexec sleep 600\n"


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, **kwargs)


def closure(program):
    found = [program]
    for line in subprocess.run(["ldd", program], capture_output=True, text=True).stdout.splitlines():
        part = line.split("=>")[-1].strip().split(" ")[0]
        if part.startswith("/"):
            found.append(part)
    return found


def make_rootfs(rootfs, out):
    """The app's files: a shell, sleep, data, libraries, its script."""
    for path in closure("/bin/sh") + closure("/usr/bin/sleep"):
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    for directory in ["proc", "dev", "data", "tmp"]:
        (rootfs / directory).mkdir(exist_ok=True)
    (rootfs / "app").mkdir()
    (rootfs / "app/run.sh").write_text(SCRIPT.format(out=out))
    (rootfs / "app/run.sh").chmod(0o755)
    data = rootfs / "app/data"
    data.mkdir()
    for i in range(50):
        (data / f"blob{i}").write_bytes(os.urandom(2 << 20))
    libs = rootfs / "usr/lib/bench"
    libs.mkdir(parents=True)
    total = 0
    for source in sorted(Path("/usr/lib/x86_64-linux-gnu").rglob("*.so*")):
        if source.is_file() and not source.is_symlink() and total < 300 << 20:
            shutil.copy(source, libs / f"{total}-{source.name}")
            total += source.stat().st_size


def make_bundle(work, out_dir):
    bundle = work / "bundle"
    make_rootfs(bundle / "rootfs", "/out/first")
    config = {
        "ociVersion": "1.0.2",
        "process": {"args": ["/app/run.sh"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": APP,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/out", "type": "bind", "source": str(out_dir), "options": ["rbind", "rw"]}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    archive = work / "bundle.tar.gz"
    sh("sh", "-c", f"tar -C {bundle} -c . | gzip -6 > {archive}")
    shutil.rmtree(bundle)
    return archive


def make_pki(work):
    """A root CA and a code-signing certificate (openssl)."""
    pki = work / "pki"
    pki.mkdir()

    def openssl(*args):
        sh("openssl", *args, cwd=pki, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root.key",
            "-subj", "/CN=Bench Root", "-days", "3650", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign", "-out", "root.pem")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "signer.key",
            "-subj", "/CN=Bench Signer", "-out", "signer.csr")
    (pki / "ext.cnf").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                 "extendedKeyUsage=codeSigning\n")
    openssl("x509", "-req", "-in", "signer.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial",
            "-days", "3000", "-extfile", "ext.cnf", "-out", "signer.pem")
    certs = work / "certs"
    certs.mkdir()
    shutil.copy(pki / "root.pem", certs / "root.pem")
    return pki, certs


def make_package(work, pki):
    """The same files as an image, then a signed EROFS lz4 package."""
    rootfs = work / "image-rootfs"
    make_rootfs(rootfs, "/data/first")
    layer = work / "layer.tar"
    sh("tar", "-C", str(rootfs), "-cf", str(layer), ".")
    shutil.rmtree(rootfs)
    layout = work / "image"
    (layout / "blobs/sha256").mkdir(parents=True)

    def blob(data_path=None, data=None):
        if data is None:
            data = Path(data_path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (layout / f"blobs/sha256/{digest}").write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer_descriptor = blob(layer)
    layer.unlink()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app/run.sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [layer_descriptor["digest"]]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(data=config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       **layer_descriptor}]}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                               **blob(data=manifest),
                                               "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    package_config = work / "package.json"
    package_config.write_text(json.dumps({"id": APP, "specVersion": "1.1.0", "version": "1.0.0",
                                          "packageType": "application", "entryPoint": "app/run.sh"}))
    package = work / "app.ralf"
    sh(str(BUNDLEGEN), "package", "-y", "--arch", "amd64", "--content", "erofs.lz4", "--config", str(package_config),
       "--sign-key", str(pki / "signer.key"), "--sign-cert", str(pki / "signer.pem"),
       "--skip-certificate-expiry-check", f"oci:{layout}:latest", str(package), stdout=subprocess.DEVNULL)
    shutil.rmtree(layout)
    return package


def start_agent(address, work, certs, log):
    spec = work / "base-spec.json"
    spec.write_text(json.dumps({
        "ociVersion": "1.0.2",
        "process": {"args": [], "cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}}))
    config = work / "agent.toml"
    config.write_text(f'storage_root = "{work / "dac"}"\ndbus_address = "{address}"\nprobe = false\n'
                      'quota = "4G"\nunpack_factor = 1\nallow_unsigned = true\n\n[packages]\n'
                      f'ca_roots = "{certs}"\nverity = "userspace"\nruntime_dir = "{work / "run"}"\n'
                      f'base_spec = "{spec}"\n')
    agent = subprocess.Popen([str(AGENT), "--config", str(config), "--log", "info"], stderr=log)
    for _ in range(500):
        if "org.rdk.dac.BundleAgent" in busctl(address, "list", "--acquired"):
            return agent
        time.sleep(0.02)
    raise SystemExit("the agent did not own its name")


def operation(address, handle):
    while True:
        progress = call(address, "GetProgress", "s", handle)
        if '"Success"' in progress:
            return
        if '"Failed"' in progress or '"Cancelled"' in progress:
            raise SystemExit(progress)
        time.sleep(0.005)


def handle_of(answer):
    return answer.split('"data":["')[1].split('"')[0]


def install(address, url, sha, version):
    start = time.perf_counter()
    operation(address, handle_of(call(address, "Install", "ssssa{sv}", APP, version, url, sha, "0")))
    return time.perf_counter() - start


def uninstall(address, version):
    operation(address, handle_of(call(address, "Uninstall", "sss", APP, version, "full")))


def launch_to_output(address, output):
    """Seconds from Launch to the app's first line; stops it again."""
    if output.exists():
        output.unlink()
    start = time.perf_counter()
    call(address, "Launch", "ss", APP, "")
    while not output.exists() or not output.read_text():
        time.sleep(0.001)
    seconds = time.perf_counter() - start
    call(address, "Stop", "sb", APP, "true")
    for _ in range(2000):
        if APP not in busctl(address, "call", "org.rdk.dobby", "/org/rdk/dobby", "org.rdk.dobby.ctrl1", "List"):
            break
        time.sleep(0.005)
    time.sleep(0.2)  # the instance is taken down on Dobby's Stopped signal
    return seconds


def disk_used(path):
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/BENCHMARKS.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: loop devices and mounts")
    sh("cargo", "build", "-q", "--profile", "device", "-p", "stb-agent", cwd=ROOT)
    sh("cargo", "build", "-q", "--release", "-p", "dobby-double", "-p", "bundlegen", cwd=ROOT)

    with tempfile.TemporaryDirectory(dir=ROOT / "target") as work_dir:
        work = Path(work_dir)
        out_dir = work / "out"
        out_dir.mkdir()
        bundle = make_bundle(work, out_dir)
        pki, certs = make_pki(work)
        package = make_package(work, pki)
        sizes = {"bundle": bundle.stat().st_size, "package": package.stat().st_size}
        shas = {kind: hashlib.sha256(path.read_bytes()).hexdigest() for kind, path in
                [("bundle", bundle), ("package", package)]}
        bus, address = start_bus(work)
        dobby = subprocess.Popen([str(DOBBY), "--address", address, "--crun"], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        log_path = work / "agent.log"
        with open(log_path, "w") as log:
            agent = start_agent(address, work, certs, log)
            server = serve(work)
            port = server.server_address[1]
            installs = {"bundle": [], "package": []}
            first = {"bundle": [], "package": []}
            later = {"bundle": [], "package": []}
            used = {}
            outputs = {"bundle": out_dir / "first", "package": work / f"dac/data/{APP}/first"}
            for run in range(args.runs):
                for kind, path in [("bundle", bundle), ("package", package)]:
                    version = f"{run}.0" if kind == "bundle" else "1.0.0"
                    url = f"http://127.0.0.1:{port}/{path.name}"
                    installs[kind].append(install(address, url, shas[kind], version))
                    first[kind].append(launch_to_output(address, outputs[kind]))
                    later[kind].append(launch_to_output(address, outputs[kind]))
                    used[kind] = disk_used(work / f"dac/apps/{APP}/{version}")
                    uninstall(address, version)
            agent.terminate()
            agent.wait()
        server.shutdown()
        dobby.terminate()
        bus.terminate()
        text = log_path.read_text()
        # In launch order: each run launches first after its install, then again.
        unit_ms = {"µs": 0.001, "ms": 1.0, "s": 1000.0}
        assembled = [float(value) * unit_ms[unit]
                     for value, unit in re.findall(r"instance assembled in ([0-9.]+)(µs|ms|s)\b", text)]
        assembled_later = assembled[1::2]
        checks = [float(m) for m in re.findall(r"content matches its root hash \(([0-9.]+)ms\)", text)]
        checks += [float(m) * 1000 for m in re.findall(r"content matches its root hash \(([0-9.]+)s\)", text)]
        machine_line = machine(work)

    best = lambda values: min(values)  # noqa: E731
    speedup = best(installs["bundle"]) / best(installs["package"])
    lines = [
        f"## RALF package against bundle on the box ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {machine_line}. `tests/bench/agent_package_bench.py --runs {args.runs}`, best of {args.runs}; "
        "the agent built with `--profile device`, apps run by the Dobby test double with real crun, "
        "`packages.verity = \"userspace\"`.",
        "",
        f"The same app (a shell, 100 MB of random data, about 300 MB of libraries): bundle `.tar.gz` "
        f"{sizes['bundle'] / 1e6:.0f} MB, signed EROFS lz4 `.ralf` {sizes['package'] / 1e6:.0f} MB.",
        "",
        "| | bundle | package | target |",
        "|---|---:|---:|---|",
        f"| Install from a loopback server, s | {best(installs['bundle']):.2f} | {best(installs['package']):.2f} "
        f"| package ≥ 3× faster (here {speedup:.1f}×) |",
        f"| Launch → first output, first launch, s | {best(first['bundle']):.3f} | {best(first['package']):.3f} | |",
        f"| Launch → first output, later launches, s | {best(later['bundle']):.3f} | {best(later['package']):.3f} | |",
        f"| Disk used by the installed version, MB | {used['bundle'] / 1e6:.0f} | {used['package'] / 1e6:.0f} | |",
        "",
        f"Mount + overlay + config.json on a launch after the first (the agent's \"instance assembled\"): "
        f"{min(assembled_later):.1f} ms best, {sorted(assembled_later)[len(assembled_later) // 2]:.1f} ms median of "
        f"{len(assembled_later)} launches (target < 50 ms); the first launch after an install also checks the "
        "content against its root hash. "
        f"The userspace dm-verity check of the whole image on the first launch after install: "
        f"{min(checks):.0f} ms best of {len(checks)}.",
    ]
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section(BEGIN, END, lines)


if __name__ == "__main__":
    main()
