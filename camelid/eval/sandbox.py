"""Run untrusted (model-generated) Python in a sandbox that is an isolation boundary, not a courtesy.

What the program sees and may do (as root: util-linux `unshare` plus a bootstrap that builds the sandbox
from inside the new namespaces; otherwise bubblewrap):
- its own mount, PID, network, IPC and UTS namespaces; a new root holding only a tmpfs `/tmp` (its working
  directory), the Python installation and the shared libraries it loads (read-only), a few devices and its
  own /proc: no project checkout, no models, no host sockets, no network;
- an unprivileged uid with no capabilities (no_new_privs), an empty environment except HOME and LANG;
- limits on CPU time, file size and processes, and on memory for the whole process tree (a cgroup's
  memory and pids limits when the machine lets camelid make one; else RLIMIT_AS per process plus a watchdog
  that sums the tree's resident memory, said in one line at first use);
- a wall-clock timeout; stdout and stderr capped (the rest is counted and dropped); every process reaped
  (the namespace's init reaps orphans and takes the whole namespace down when the program ends).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from camelid.errors import CamelidError

log = logging.getLogger(__name__)
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 10
    wall_s: float = 15.0
    memory_bytes: int = 2 * 2**30
    """For the whole process tree."""
    processes: int = 32
    file_bytes: int = 16 * 2**20
    output_bytes: int = 1 * 2**20
    """Kept of stdout and of stderr each; the rest is counted and dropped."""
    tmp_bytes: int = 64 * 2**20


@dataclass
class Result:
    passed: bool
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool = False
    """Output beyond `Limits.output_bytes` was dropped."""
    killed_for: str | None = None
    """"time" or "memory" when the harness stopped the program."""


def backend() -> str:
    """`unshare` when running as root (bubblewrap as root maps the sandbox user to host root, where no process
    limit holds), else `bwrap`."""
    if os.geteuid() == 0 and shutil.which("unshare"):
        return "unshare"
    if shutil.which("bwrap") and os.geteuid() != 0:
        return "bwrap"
    if shutil.which("unshare") and os.geteuid() == 0:
        return "unshare"
    raise CamelidError(
        "no sandbox available: run as root (util-linux unshare) or install bubblewrap (apt-get install bubblewrap)"
    )


# -- what the sandbox mounts --------------------------------------------------------------------------------


def _python() -> tuple[Path, Path]:
    """The real Python installation (not a venv's symlinks) and its interpreter."""
    prefix = Path(os.path.realpath(sys.base_prefix))
    exe = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    if not exe.is_relative_to(prefix):
        exe = prefix / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return prefix, exe


def _library_dirs() -> list[str]:
    """Where the dynamic loader finds the shared libraries Python and its extension modules link."""
    return [d for d in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib") if os.path.isdir(d)]


# The bootstrap runs as root inside the new namespaces (PID 1 of the new PID namespace): it builds the new root,
# pivots into it, forks the program as an unprivileged user with its limits, and stays as init, reaping.
_BOOT = r"""
import ctypes, os, resource, signal, sys
root, prefix, exe, program, cpu, mem, nproc, fsize, tmp_bytes = sys.argv[1:10]
libdirs = sys.argv[10:]
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
def mount(src, dst, fs, flags, data=None):
    if libc.mount(src and src.encode(), dst.encode(), fs and fs.encode(), flags, data and data.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount {src} {dst}")
def bind_ro(src, dst):
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
for d in libdirs:
    if os.path.islink(d):
        os.symlink(os.readlink(d), root + d)
    else:
        bind_ro(d, root + d)
if os.path.isfile("/etc/ld.so.cache"):
    bind_ro("/etc/ld.so.cache", root + "/etc/ld.so.cache")
bind_ro(prefix, root + prefix)
os.makedirs(root + "/tmp")
mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_bytes},mode=1777")
with open(program, "rb") as f, open(root + "/tmp/program.py", "wb") as g:
    g.write(f.read())
os.chmod(root + "/tmp/program.py", 0o644)
os.makedirs(root + "/dev")
for name in ("null", "zero", "full", "random", "urandom"):
    bind_ro("/dev/" + name, root + "/dev/" + name)
    mount(None, root + "/dev/" + name, None, MS_REMOUNT | MS_BIND | MS_NOSUID)  # writable, like /dev/null is
os.makedirs(root + "/proc")
mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
os.makedirs(root + "/.old")
nr = {"x86_64": 155, "aarch64": 41}[os.uname().machine]
os.chdir(root)
if libc.syscall(nr, b".", b".old") != 0:
    raise OSError(ctypes.get_errno(), "pivot_root")
os.chdir("/")
if libc.umount2(b"/.old", 2) != 0:
    raise OSError(ctypes.get_errno(), "umount old root")
os.rmdir("/.old")
mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
child = os.fork()
if child == 0:
    os.setsid()
    for lim, v in ((resource.RLIMIT_CPU, int(cpu)), (resource.RLIMIT_AS, int(mem)), (resource.RLIMIT_NPROC, int(nproc)),
                   (resource.RLIMIT_FSIZE, int(fsize)), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(lim, (v, v))
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    os.chdir("/tmp")
    os.closerange(3, 1 << 16)
    os.execve(exe, [exe, "-I", "-B", "/tmp/program.py"], {"HOME": "/tmp", "LANG": "C.UTF-8"})
status = 1
while True:
    try:
        pid, st = os.wait()
    except ChildProcessError:
        break
    if pid == child:
        status = os.waitstatus_to_exitcode(st)
        if os.getpid() == 1:  # only ever inside the new PID namespace: the rest of the program goes with it
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
sys.exit(status if status >= 0 else 128 - status)
"""

# Inside bubblewrap (not root): limits, then the program.
_LIMITS = r"""
import os, resource, sys
exe, cpu, mem, nproc, fsize = sys.argv[1:6]
for lim, v in ((resource.RLIMIT_CPU, int(cpu)), (resource.RLIMIT_AS, int(mem)), (resource.RLIMIT_NPROC, int(nproc)),
               (resource.RLIMIT_FSIZE, int(fsize)), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(lim, (v, v))
os.execve(exe, [exe, "-I", "-B", "/tmp/program.py"], {"HOME": "/tmp", "LANG": "C.UTF-8"})
"""


def _command(program: Path, root: Path, limits: Limits, kind: str) -> list[str]:
    prefix, exe = _python()
    nums = [str(limits.cpu_s), str(limits.memory_bytes), str(limits.processes), str(limits.file_bytes)]
    if kind == "bwrap":
        binds = []
        for d in _library_dirs():
            binds += ["--symlink", os.readlink(d), d] if os.path.islink(d) else ["--ro-bind", d, d]
        return [
            "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
            "--ro-bind", str(prefix), str(prefix), *binds, "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
            "--dev", "/dev", "--proc", "/proc", "--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp",
            "--ro-bind", str(program), "/tmp/program.py", "--chdir", "/tmp",
            "--", str(exe), "-I", "-S", "-c", _LIMITS, str(exe), *nums,
        ]  # fmt: skip
    return [
        "unshare", "--mount", "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts",
        str(exe), "-I", "-S", "-c", _BOOT, str(root), str(prefix), str(exe), str(program), *nums,
        str(limits.tmp_bytes), *_library_dirs(),
    ]  # fmt: skip


# -- whole-tree limits --------------------------------------------------------------------------------------


class _Cgroup:
    """A memory + pids cgroup (v2, or v1's two hierarchies) for one run; None where camelid may not make one."""

    def __init__(self, dirs: list[Path], events: Path) -> None:
        self.dirs, self.events = dirs, events

    @classmethod
    def create(cls, limits: Limits) -> _Cgroup | None:
        name = f"camelid-sbx-{uuid.uuid4().hex[:12]}"
        own = {}
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    own[c] = path
        made: list[Path] = []
        try:
            v2 = Path("/sys/fs/cgroup")
            if "" in own and (v2 / "cgroup.controllers").is_file():
                parent = v2 / own[""].lstrip("/")
                if {"memory", "pids"} <= set((parent / "cgroup.subtree_control").read_text().split()):
                    d = parent / name
                    d.mkdir()
                    made.append(d)
                    (d / "memory.max").write_text(str(limits.memory_bytes))
                    with contextlib.suppress(OSError):
                        (d / "memory.swap.max").write_text("0")
                    (d / "pids.max").write_text(str(limits.processes + 4))
                    return cls(made, d / "memory.events")
            mem_root, pids_root = v2 / "memory", v2 / "pids"
            if "memory" in own and "pids" in own and mem_root.is_dir() and pids_root.is_dir():
                m = mem_root / own["memory"].lstrip("/") / name
                p = pids_root / own["pids"].lstrip("/") / name
                m.mkdir()
                made.append(m)
                p.mkdir()
                made.append(p)
                (m / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
                with contextlib.suppress(OSError):
                    (m / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
                (p / "pids.max").write_text(str(limits.processes + 4))
                return cls(made, m / "memory.oom_control")
        except OSError:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()
        return None

    def enter(self) -> None:
        """Called in the child before exec: it and everything it starts belong to the cgroup."""
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))

    def hit_memory_limit(self) -> bool:
        """Whether the kernel killed a process of the tree for memory (v2 memory.events, v1 memory.oom_control)."""
        try:
            fields = dict(line.split() for line in self.events.read_text().splitlines())
            return int(fields.get("oom_kill", 0)) > 0
        except (OSError, ValueError):
            return False

    def kill_and_remove(self) -> None:
        for _ in range(50):
            pids = set()
            for d in self.dirs:
                with contextlib.suppress(OSError):
                    pids |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


def _descendants(pid: int) -> list[int]:
    out, queue = [], [pid]
    while queue:
        p = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
                out.extend(kids)
                queue.extend(kids)
    return out


def _tree_rss(pid: int) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
    return total


def _stop(pid: int, kind: str) -> None:
    """Kill the sandbox. With unshare, its child is the namespace's init: killing that takes the whole namespace
    down (the kernel kills and reaps every process in it) and lets unshare reap it and exit. Killing unshare
    itself instead would leave the init a zombie that nothing reaps."""
    targets = [pid]
    if kind == "unshare":
        with contextlib.suppress(OSError, ValueError):
            targets = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()] or [pid]
    for t in targets:
        with contextlib.suppress(OSError):
            os.kill(t, signal.SIGKILL)


_warned: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _reader(stream, cap: int, out: list, counts: list) -> None:
    kept, total = bytearray(), 0
    for chunk in iter(lambda: stream.read(65536), b""):
        total += len(chunk)
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    out.append(bytes(kept))
    counts.append(total)


def run_python(source: str, limits: Limits = Limits(), kind: str | None = None) -> Result:
    """Run `source` as a Python program in the sandbox; `passed` means it exited 0 within the limits."""
    kind = kind or backend()
    cgroup = _Cgroup.create(limits) if kind == "unshare" else None
    if cgroup is None:
        _say_once(
            "sandbox: no cgroup could be made here, so its memory limit for the whole process tree is enforced by "
            "a watchdog summing resident memory every 20 ms (plus a per-process address-space limit)"
        )
    with tempfile.TemporaryDirectory(prefix="camelid-sbx-") as tmp:
        program = Path(tmp) / "program.py"
        program.write_text(source)
        root = Path(tmp) / "root"
        root.mkdir()
        proc = subprocess.Popen(
            _command(program, root, limits, kind),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=cgroup.enter if cgroup else None,  # noqa: PLW1509 - writes one file, then exec
        )
        outs: list[list] = [[], []]
        counts: list[list] = [[], []]
        readers = [
            threading.Thread(target=_reader, args=(s, limits.output_bytes, o, c), daemon=True)
            for s, o, c in zip((proc.stdout, proc.stderr), outs, counts)
        ]
        for t in readers:
            t.start()
        deadline = time.monotonic() + limits.wall_s
        killed_for = None
        while proc.poll() is None:
            if time.monotonic() > deadline:
                killed_for = "time"
            elif cgroup is None and _tree_rss(proc.pid) > limits.memory_bytes:
                killed_for = "memory"
            if killed_for:
                _stop(proc.pid, kind)
                break
            time.sleep(0.02)
        proc.wait()
        for t in readers:
            t.join(timeout=5)
        if cgroup is not None:
            if killed_for is None and cgroup.hit_memory_limit():
                killed_for = "memory"
            cgroup.kill_and_remove()
    stdout = (outs[0] or [b""])[0].decode("utf-8", errors="replace")
    stderr = (outs[1] or [b""])[0].decode("utf-8", errors="replace")
    truncated = any((c or [0])[0] > limits.output_bytes for c in counts)
    ok = proc.returncode == 0 and killed_for is None
    return Result(ok, proc.returncode, stdout, stderr, killed_for == "time", truncated, killed_for)
