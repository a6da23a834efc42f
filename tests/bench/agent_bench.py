#!/usr/bin/env python3
"""Benchmark: the on-box agent's size, idle memory, and install throughput.

- size of the stripped binary built with the `device` profile (what the
  Yocto recipe builds) and with plain `--release`;
- idle RSS: the agent started on a private system bus, serving its D-Bus
  API, with nothing to do;
- install of a bundle archive of about 200 MB from a loopback HTTP server, through
  the D-Bus API (download, sha256, unpack, fsync, rename), against
  `curl URL | tar xz` of the same file (no checks, no fsync).

Writes a Markdown section into docs/BENCHMARKS.md.

Usage: tests/bench/agent_bench.py [--runs N] [--no-write]
"""

import argparse
import datetime
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchdoc import ROOT, machine, timed, write_section

DEVICE = ROOT / "target/device/stb-agent"
RELEASE = ROOT / "target/release/stb-agent"
BEGIN, END = "<!-- agent-bench:begin -->", "<!-- agent-bench:end -->"
BUS_CONFIG = """<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def stripped_size(binary, work):
    copy = Path(work) / (binary.name + ".stripped")
    shutil.copy(binary, copy)
    subprocess.run(["strip", str(copy)], check=True)
    return copy.stat().st_size


def start_bus(work):
    config = Path(work) / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=Path(work) / "bus"))
    bus = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return bus, bus.stdout.readline().strip()


def busctl(address, *args):
    return subprocess.run(["busctl", f"--address={address}", "--json=short", *args],
                          check=True, capture_output=True, text=True).stdout


def call(address, method, signature, *args):
    return busctl(address, "call", "org.rdk.dac.BundleAgent", "/org/rdk/dac/BundleAgent",
                  "org.rdk.dac.BundleAgent1", method, signature, *args)


def start_agent(address, storage, work):
    config = Path(work) / "agent.toml"
    config.write_text(f'storage_root = "{storage}"\ndbus_address = "{address}"\nprobe = false\n'
                      'quota = "2G"\nunpack_factor = 1\n')
    agent = subprocess.Popen([str(DEVICE), "--config", str(config), "--log", "warn"])
    for _ in range(500):
        names = busctl(address, "list", "--acquired")
        if "org.rdk.dac.BundleAgent" in names:
            return agent
        time.sleep(0.02)
    raise SystemExit("the agent did not own its name")


def rss_kib(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_bundle(work):
    """A bundle of about 200 MB as tar.gz: 100 MB of incompressible data and
    300 MB of this machine's libraries."""
    bundle = Path(work) / "bundle"
    (bundle / "rootfs/data").mkdir(parents=True)
    (bundle / "config.json").write_text('{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["/x"]}}')
    for i in range(50):
        (bundle / f"rootfs/data/blob{i}").write_bytes(os.urandom(2 << 20))
    libs = bundle / "rootfs/usr/lib"
    libs.mkdir(parents=True)
    total = 0
    for source in sorted(Path("/usr/lib/x86_64-linux-gnu").rglob("*.so*")):
        if source.is_file() and not source.is_symlink() and total < 300 << 20:
            shutil.copy(source, libs / f"{total}-{source.name}")
            total += source.stat().st_size
    archive = Path(work) / "bundle.tar.gz"
    subprocess.run(f"tar -C {bundle} -c . | gzip -6 > {archive}", shell=True, check=True)
    shutil.rmtree(bundle)
    return archive


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory):
    handler = functools.partial(QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def install(address, url, sha, version):
    handle = call(address, "Install", "ssssa{sv}", "com.bench.app", version, url, sha, "0")
    handle = handle.split('"data":["')[1].split('"')[0]
    while True:
        progress = call(address, "GetProgress", "s", handle)
        if '"Success"' in progress:
            return
        if '"Failed"' in progress or '"Cancelled"' in progress:
            raise SystemExit(progress)
        time.sleep(0.02)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/BENCHMARKS.md")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "-q", "--profile", "device", "-p", "stb-agent"], check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "stb-agent"], check=True, cwd=ROOT)

    with tempfile.TemporaryDirectory(dir=ROOT / "target") as work:
        device_size = stripped_size(DEVICE, work)
        release_size = stripped_size(RELEASE, work)
        bus, address = start_bus(work)
        storage = Path(work) / "dac"
        agent = start_agent(address, storage, work)
        time.sleep(2)
        idle_rss = rss_kib(agent.pid)

        archive = make_bundle(work)
        size = archive.stat().st_size
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        server = serve(work)
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        ours, theirs = [], []
        for run in range(args.runs):
            start = time.perf_counter()
            install(address, url, sha, f"1.{run}")
            ours.append(time.perf_counter() - start)
            target = Path(work) / "curl"
            theirs.append(timed(f"mkdir -p {target} && curl -s {url} | tar xz -C {target}",
                                lambda: shutil.rmtree(target, ignore_errors=True))[0])
        peak_rss = rss_kib(agent.pid, "VmHWM")
        agent.terminate()
        agent.wait()
        server.shutdown()
        bus.terminate()
        machine_line = machine(work)

    mib = 1 << 20
    best_ours, best_theirs = min(ours), min(theirs)
    lines = [
        f"## On-box agent ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {machine_line}. `tests/bench/agent_bench.py`, best of {args.runs}.",
        "",
        "| What | Figure | Target |",
        "|---|---|---|",
        f"| stripped binary, `--profile device` (x86_64) | {device_size / mib:.2f} MiB | < 8 MiB |",
        f"| stripped binary, `--release` | {release_size / mib:.2f} MiB | |",
        f"| RSS idle on D-Bus | {idle_rss / 1024:.2f} MiB | < 8 MiB |",
        f"| RSS peak over the installs | {peak_rss / 1024:.2f} MiB | |",
        "",
        f"Install of a {size / 1e6:.0f} MB bundle archive from a loopback HTTP server:",
        "",
        "| | seconds | MB/s of archive |",
        "|---|---|---|",
        f"| stb-agent Install over D-Bus (download, sha256, unpack, fsync, rename) | {best_ours:.2f} | {size / 1e6 / best_ours:.0f} |",
        f"| `curl URL \\| tar xz` (no checks, no fsync) | {best_theirs:.2f} | {size / 1e6 / best_theirs:.0f} |",
    ]
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section(BEGIN, END, lines)


if __name__ == "__main__":
    main()
