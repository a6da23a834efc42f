"""Shared by the bench scripts: the machine line, timing, and writing a
section of docs/BENCHMARKS.md between its markers."""

import os
import platform
import resource
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/BENCHMARKS.md"


def machine(work):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
    return f"{os.cpu_count()} × {cpu}, {mem} GiB RAM, Linux {platform.release()}, work directory on {fs}; commit {commit()}"


def commit():
    """The commit measured, and whether the tree had changes on top of it."""
    git = lambda *args: subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{DOC.relative_to(ROOT)}") else "")


def timed(command, cleanup=lambda: None):
    """Runs a shell command; returns (wall, cpu) seconds of it and its children."""
    cleanup()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["sh", "-c", command], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def timed_process(argv):
    """Runs one program; returns (wall s, cpu s, peak memory MiB) of it alone."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def write_section(begin, end, body_lines):
    """Replaces (or appends) the section between the markers."""
    section = "\n".join([begin, *body_lines, end]) + "\n"
    print(section)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nFigures written by the bench scripts; never timed assertions in tests.\n\n"
    if begin in text:
        before, rest = text.split(begin, 1)
        text = before + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text += "\n" + section
    DOC.write_text(text)
    print(f"updated {DOC}")
