"""Generated code runs in an isolation boundary: it passes when it is right, and whatever it tries beyond that
(sockets, files outside its temp dir, the parent's environment, memory across processes, fork bombs, floods
of output) is stopped, scored as failed, and leaves nothing behind."""

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

import camelid.eval.sandbox as sandbox
from camelid.eval.sandbox import Limits, backend, run_python

KINDS = ["bwrap", "unshare"]


@pytest.fixture(params=KINDS)
def kind(request):
    if request.param == "bwrap" and (os.geteuid() == 0 or not shutil.which("bwrap")):
        pytest.skip(
            "bubblewrap runs only as a non-root user (as root it maps the sandbox to host root, where no process "
            "limit holds; camelid uses unshare then)"
        )
    if request.param == "unshare" and os.geteuid() != 0:
        pytest.skip("the unshare backend needs root (mount and PID namespaces without a user namespace)")
    return request.param


def zombies() -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    out.add(int(d.name))
            except (OSError, IndexError):
                pass
    return out


def test_good_code_passes(kind):
    r = run_python("import math\nassert math.isqrt(17) == 4\nprint('ok')\n", kind=kind)
    assert r.passed and r.stdout.strip() == "ok"


def test_failing_assert_fails(kind):
    assert not run_python("assert 1 == 2\n", kind=kind).passed


def test_no_network(kind):
    src = "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)\n"
    r = run_python(src, kind=kind)
    assert not r.passed and ("Errno" in r.stderr or "Network is unreachable" in r.stderr)


def test_host_unix_socket_is_out_of_reach(kind, tmp_path):
    """A process on the host listens on a unix socket; the program knows its path and cannot reach it."""
    path = tmp_path / "service.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen()
    got = []

    def accept():
        server.settimeout(5)
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    src = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\ns.sendall(b'pwned')\n"
    r = run_python(src, kind=kind)
    t.join()
    server.close()
    assert not r.passed and not got and ("FileNotFoundError" in r.stderr or "ConnectionRefused" in r.stderr)


def test_files_outside_its_temp_dir_are_invisible(kind, tmp_path, debug_checkpoint):
    """The project checkout, an exported model and the host's /etc are not in the sandbox's file system."""
    checkout = Path(__file__).resolve().parents[2] / "pyproject.toml"
    model = debug_checkpoint / "config.json"
    src = "import os\nfor p in {paths!r}:\n    print(p, os.path.exists(p))\n".format(
        paths=[
            str(checkout),
            str(model),
            "/etc/passwd",
            "/etc/hostname",
            str(tmp_path),
            str(Path.home() / ".cache"),
            "/home",
        ]
    )
    r = run_python(src, kind=kind)
    assert r.passed, r.stderr
    assert all(line.endswith("False") for line in r.stdout.strip().splitlines()), r.stdout


def test_the_environment_is_empty(kind, monkeypatch):
    monkeypatch.setenv("CAMELID_TEST_SECRET", "s3cret")
    r = run_python("import os\nprint(sorted(os.environ))\n", kind=kind)
    assert r.passed and r.stdout.strip() == "['HOME', 'LANG']", r.stdout


def test_cannot_write_outside_and_leaves_nothing(kind, tmp_path, monkeypatch):
    # the sandbox's working folders go in a temp dir of this test's own, so other tests (or pytest workers) that
    # write to /tmp at the same time cannot make "leaves nothing" pass or fail
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    target = tmp_path / "escape.txt"
    marker = temp / "camelid-sandbox-marker"
    src = "".join(f"open({str(p)!r}, 'w').write('x')\n" for p in ("inside.txt", marker, target))
    r = run_python(src, kind=kind)
    assert not r.passed and not target.exists() and not marker.exists()
    assert os.listdir(temp) == []


def test_fork_bomb_is_stopped_and_reaped(kind):
    src = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    before = zombies()
    t0 = time.time()
    r = run_python(src, Limits(wall_s=5, cpu_s=3), kind=kind)
    assert not r.passed and time.time() - t0 < 30
    time.sleep(0.5)
    assert zombies() - before == set()  # no defunct process left behind


def test_four_gib_allocation_is_refused(kind):
    r = run_python("x = bytearray(4 * 2**30)\nprint('allocated')\n", kind=kind)
    assert not r.passed and "allocated" not in r.stdout and "MemoryError" in r.stderr


TREE = """import os, time
kids = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        x = b'x' * (300 * 2**20)  # touched: resident, unlike bytearray's zero pages
        time.sleep(3)
        os._exit(0)
    kids.append(pid)
print([os.waitpid(k, 0)[1] for k in kids])
"""


def test_memory_limit_holds_for_the_whole_process_tree(kind):
    """Six processes of 300 MB each stay under a 1 GiB per-process limit but not under 1 GiB for the tree."""
    r = run_python(TREE, Limits(memory_bytes=2**30, wall_s=20), kind=kind)
    assert not r.passed and r.killed_for == "memory", r


def test_tree_memory_watchdog_where_no_cgroup_can_be_made(kind, monkeypatch, caplog):
    monkeypatch.setattr(sandbox._Cgroup, "create", classmethod(lambda cls, limits: None))
    sandbox._warned.clear()
    r = run_python(TREE, Limits(memory_bytes=2**30, wall_s=20), kind=kind)
    assert not r.passed and r.killed_for == "memory", r
    assert any("watchdog" in rec.message for rec in caplog.records)  # the weaker guarantee is said, once


def test_infinite_loop_is_killed(kind):
    t0 = time.time()
    r = run_python("while True:\n    pass\n", Limits(cpu_s=2, wall_s=4), kind=kind)
    assert not r.passed and time.time() - t0 < 10


def test_output_flood_is_truncated(kind):
    r = run_python("import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 2**20)\nprint('done')\n", kind=kind)
    assert r.passed and r.truncated and len(r.stdout) == Limits().output_bytes


def test_backend():
    assert backend() in KINDS
