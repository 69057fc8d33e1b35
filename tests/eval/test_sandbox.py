"""Generated code that misbehaves is stopped, scored as failed, and leaves nothing behind."""

import os
import tempfile
import time

import pytest

from camelid.eval.sandbox import Limits, backend, run_python

KINDS = ["bwrap", "unshare"]


@pytest.fixture(params=KINDS)
def kind(request):
    import shutil

    if request.param == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed (make setup installs it)")
    if request.param == "bwrap" and os.geteuid() == 0:
        pytest.skip(
            "as root, bubblewrap maps the sandbox to host root, where no process limit holds; "
            "camelid uses unshare + setpriv then"
        )
    return request.param


def test_good_code_passes(kind):
    r = run_python("import math\nassert math.isqrt(17) == 4\nprint('ok')\n", kind=kind)
    assert r.passed and r.stdout.strip() == "ok"


def test_failing_assert_fails(kind):
    assert not run_python("assert 1 == 2\n", kind=kind).passed


def test_no_network(kind):
    src = "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)\n"
    r = run_python(src, kind=kind)
    assert not r.passed and ("Errno" in r.stderr or "Network is unreachable" in r.stderr)


def test_cannot_write_outside_and_leaves_nothing(kind, tmp_path):
    target = tmp_path / "escape.txt"
    marker = os.path.join(tempfile.gettempdir(), "camelid-sandbox-marker")
    src = (
        f"open('inside.txt', 'w').write('x')\nopen({marker!r}, 'w').write('x')\nopen({str(target)!r}, 'w').write('x')\n"
    )
    before = set(os.listdir(tempfile.gettempdir()))
    r = run_python(src, kind=kind)
    assert not r.passed and not target.exists() and not os.path.exists(marker)
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


def test_fork_bomb_is_stopped(kind):
    src = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    t0 = time.time()
    r = run_python(src, Limits(wall_s=5, cpu_s=3), kind=kind)
    assert not r.passed and time.time() - t0 < 30


def test_four_gib_allocation_is_refused(kind):
    r = run_python("x = bytearray(4 * 2**30)\nprint('allocated')\n", kind=kind)
    assert not r.passed and "allocated" not in r.stdout and "MemoryError" in r.stderr


def test_infinite_loop_is_killed(kind):
    t0 = time.time()
    r = run_python("while True:\n    pass\n", Limits(cpu_s=2, wall_s=4), kind=kind)
    assert not r.passed and time.time() - t0 < 10


def test_backend_prefers_bubblewrap():
    assert backend() in KINDS
