#!/usr/bin/env python3
"""Connection flood against `bundlegen serve` (embedded mode): how long
/healthz takes while silent connections are held, and what the flood costs
the service in CPU.

Starts a release build of the service on a loopback port, then for each
case (no flood; N silent connections; N silent connections with the
service limited to --nofile descriptors) holds the connections, measures
the service's CPU over --window seconds from /proc, and times `curl
/healthz` --runs times (each a new connection). Writes a section into
docs/BENCHMARKS.md.

`--hold CASE` sets a case up, prints the /healthz URL and waits (until
SIGINT or SIGTERM), to time requests with another tool.

Usage: tests/bench/flood_bench.py [--sockets 300] [--nofile 128] [--runs 20]
       [--window 5] [--no-write] [--hold quiet|flood|flood-nofile]
"""

import argparse
import datetime
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time

from benchdoc import ROOT, machine, write_section

BINARY = ROOT / "target/release/bundlegen"
BEGIN, END = "<!-- flood-bench:begin -->", "<!-- flood-bench:end -->"


def start_service(data_dir):
    process = subprocess.Popen(
        [str(BINARY), "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"listening on http://(\S+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"the service did not start: {line!r}")
    host, port = match.group(1).rsplit(":", 1)
    return process, (host, int(port))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def hold(address, count):
    sockets = []
    for _ in range(count):
        sockets.append(socket.create_connection(address, timeout=5))
    return sockets


def still_open(sockets):
    """How many of the held connections the server has not closed."""
    alive = 0
    for s in sockets:
        s.setblocking(False)
        try:
            alive += 0 if s.recv(1) == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def curl_times(url, runs):
    times = []
    for _ in range(runs + 1):
        output = subprocess.run(
            ["curl", "-fsS", "-o", "/dev/null", "-w", "%{time_total}", "--max-time", "120", url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        times.append(float(output))
    return times[1:]  # the first warms up


def set_up(case, address, pid, args):
    if case == "flood-nofile":
        subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={args.nofile}:{args.nofile}"], check=True)
    return hold(address, args.sockets) if case != "quiet" else []


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=300)
    parser.add_argument("--nofile", type=int, default=128)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--hold", choices=["quiet", "flood", "flood-nofile"])
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit("build it first: cargo build --release -p bundlegen")

    if args.hold:
        with tempfile.TemporaryDirectory() as data_dir:
            process, address = start_service(data_dir)
            held = set_up(args.hold, address, process.pid, args)
            print(f"http://{address[0]}:{address[1]}/healthz ({len(held)} silent connections held)", flush=True)
            # SIGINT or SIGTERM ends it (a background job ignores SIGINT).
            signal.signal(signal.SIGTERM, lambda *_: None)
            signal.signal(signal.SIGINT, lambda *_: None)
            signal.pause()
            process.kill()
        return

    rows = []
    for case, label in [
        ("quiet", "no flood"),
        ("flood", f"{args.sockets} silent connections"),
        ("flood-nofile", f"{args.sockets} silent connections, service limited to {args.nofile} descriptors"),
    ]:
        with tempfile.TemporaryDirectory() as data_dir:
            process, address = start_service(data_dir)
            held = set_up(case, address, process.pid, args)
            before = cpu_seconds(process.pid)
            time.sleep(args.window)
            cpu = cpu_seconds(process.pid) - before
            times = curl_times(f"http://{address[0]}:{address[1]}/healthz", args.runs)
            rows.append(
                f"| {label} | {statistics.median(times) * 1000:.1f} | {max(times) * 1000:.1f} | "
                f"{cpu / args.window * 100:.1f} | {open_fds(process.pid)} | {still_open(held)} |"
            )
            process.kill()
            process.wait()
            for s in held:
                s.close()

    today = datetime.date.today().isoformat()
    lines = [
        "",
        f"## Connection flood: /healthz while silent connections are held ({today})",
        "",
        f"Machine: {machine(ROOT)}.",
        "",
        f"Command: `tests/bench/flood_bench.py --sockets {args.sockets} --nofile {args.nofile} --runs {args.runs} "
        f"--window {args.window:g}`; `bundlegen serve` on its defaults (512 connections, 60 s idle limit). "
        f"Latency: `curl /healthz`, a new connection each time, {args.runs} runs after a warm-up. CPU: the "
        f"service's user + system time over {args.window:g} s with the flood held and nothing else asked.",
        "",
        "| case | /healthz median ms | max ms | service CPU % while flooded | service fds | silent connections still open |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section(BEGIN, END, lines)


if __name__ == "__main__":
    main()
