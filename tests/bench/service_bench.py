#!/usr/bin/env python3
"""Load test of `bundlegen serve` (embedded mode): sustained bundle downloads
(whole and ranged) and lookups with wrk, zero errors required.

Starts a release build of the service on a loopback port, loads the
conformance platform and image, builds one bundle, then runs wrk against
the download and lookup endpoints and writes a section into
docs/BENCHMARKS.md.

Usage: tests/bench/service_bench.py [--seconds N] [--connections N] [--no-write]
"""

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from benchdoc import ROOT, machine, write_section

BINARY = ROOT / "target/release/bundlegen"
CONFORMANCE = ROOT.parent / "shared/conformance/bundlegen"
PLATFORM = "rpi3_reference_vc4_dunfell"
APP = "com.rdk.wayland-egl-test"
BEGIN, END = "<!-- service-bench:begin -->", "<!-- service-bench:end -->"


def call(url, token, method="GET", body=None):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, method=method, data=body, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=600)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {url}: {e.code}: {e.read().decode(errors='replace')}")
    with response:
        return json.loads(response.read() or b"null")


def wrk(url, token, seconds, connections, headers=()):
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {token}"]
    for header in headers:
        args += ["-H", header]
    output = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout
    def find(pattern, default="0"):
        match = re.search(pattern, output)
        return match.group(1) if match else default
    return {
        "requests_per_second": float(find(r"Requests/sec:\s+([\d.]+)")),
        "transfer": find(r"Transfer/sec:\s+(\S+)"),
        "latency_avg": find(r"Latency\s+(\S+)"),
        "latency_p99": find(r"99%\s+(\S+)"),
        "requests": int(find(r"(\d+) requests in")),
        "non_2xx": int(find(r"Non-2xx or 3xx responses: (\d+)")),
        "socket_errors": sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", find(r"Socket errors: (.*)", ""))),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "bundlegen"], check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "data"
        server = subprocess.Popen(
            [BINARY, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--bootstrap-token", data / "admin.token",
             "--local-images", CONFORMANCE / "images"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            base = server.stdout.readline().split("listening on ")[1].strip()
            admin = (data / "admin.token").read_text().strip()
            template = (CONFORMANCE / f"templates/{PLATFORM}.json").read_bytes()
            libs = (CONFORMANCE / f"templates/{PLATFORM}_libs.json").read_bytes()
            call(f"{base}/v1/platforms/{PLATFORM}", admin, "PUT", template)
            call(f"{base}/v1/platforms/{PLATFORM}/libs", admin, "PUT", libs)
            image = f"oci:{CONFORMANCE / 'images/dac-image-wayland-egl-test-oci'}:latest"
            body = json.dumps({"image": image}).encode()
            call(f"{base}/v1/apps/{APP}/versions/1.0.0", admin, "PUT", body)
            device = call(f"{base}/v1/tokens", admin, "POST", json.dumps({"name": "bench", "role": "device", "platform": PLATFORM}).encode())["token"]
            lookup = f"{base}/v1/lookup?app={APP}&version=1.0.0&platform={PLATFORM}"
            bundle = call(f"{lookup}&wait=600", device)["bundle"]
            content = f"{base}{bundle['downloadUrl']}"
            runs = [
                ("download, whole bundle", content, ()),
                ("download, 64 KiB range", content, ("Range: bytes=0-65535",)),
                ("download, If-None-Match (304)", content, (f'If-None-Match: "{bundle["sha256"]}"',)),
                ("lookup (bundle ready)", lookup, ()),
            ]
            results = [(name, wrk(url, device, args.seconds, args.connections, headers)) for name, url, headers in runs]
        finally:
            server.terminate()
            server.wait()
    errors = sum(r["non_2xx"] + r["socket_errors"] for _, r in results)
    lines = ["", f"## Generator service under load ({datetime.date.today().isoformat()})", "",
             f"Machine: {machine(ROOT)}; server and wrk share it.", "",
             f"Command: `tests/bench/service_bench.py --seconds {args.seconds} --connections {args.connections}`: "
             f"`bundlegen serve` (release, embedded mode: SQLite, bundles in a directory), wrk with 2 threads and "
             f"{args.connections} connections for {args.seconds} s per row, device token. The bundle is the "
             f"conformance image for {PLATFORM} ({bundle['size'] / 1e6:.1f} MB).", "",
             "| request | requests/s | transfer/s | latency avg | latency p99 | requests | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results:
        lines.append(f"| {name} | {r['requests_per_second']:.0f} | {r['transfer']} | {r['latency_avg']} | "
                     f"{r['latency_p99']} | {r['requests']} | {r['non_2xx'] + r['socket_errors']} |")
    lines += ["", "Errors are non-2xx/3xx responses plus socket errors; the script fails if there is any.", ""]
    if args.no_write:
        print("\n".join([BEGIN, *lines, END]))
    else:
        write_section(BEGIN, END, lines)
    if errors:
        raise SystemExit(f"{errors} errors under load")


if __name__ == "__main__":
    sys.exit(main())
