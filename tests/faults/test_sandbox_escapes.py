"""Escape attempts from generated code: each program tries to reach something outside the sandbox (a secret file,
the parent's environment, a host socket, the host's processes, more resources than its limits) and reports what
it got; an attempt that gets anything is an escape."""

from __future__ import annotations

import os
import socket
import textwrap
import threading
import time

import pytest

from camelid.eval.sandbox import Limits, run_python
from tests.faults.cases import record

SECRET = "camelid-secret-7f3a"

# Each program prints ESCAPED:<what> when it gets through; anything else (an exception, a refusal) is contained.
ATTEMPTS = {
    "read_secret_file": """
    print('ESCAPED:' + open({secret_file!r}).read())
""",
    "list_checkout": """
    import os
    print('ESCAPED:' + ','.join(os.listdir({checkout!r})))
""",
    "parent_environment": """
    import os
    v = os.environ.get('CAMELID_SECRET')
    print('ESCAPED:' + v) if v else None
""",
    "proc_environ_of_pid1": """
    print('ESCAPED:' + open('/proc/1/environ').read()) if 'CAMELID' in open('/proc/1/environ').read() else None
""",
    "host_processes": """
    import os
    pids = [p for p in os.listdir('/proc') if p.isdigit()]
    print('ESCAPED:' + str(len(pids))) if len(pids) > 5 else None
""",
    "unix_socket": """
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect({sock!r})
    s.sendall(b'x')
    print('ESCAPED:' + s.recv(100).decode())
""",
    "tcp_localhost": """
    import socket
    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)
    print('ESCAPED:' + s.recv(100).decode())
""",
    "abstract_socket": """
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect('\\0camelid-abstract')
    print('ESCAPED:' + s.recv(100).decode())
""",
    "write_outside": """
    open({outside!r}, 'w').write('x')
    print('ESCAPED:wrote')
""",
    "kill_parent": """
    import os, signal
    os.kill(os.getppid(), signal.SIGKILL)
    print('ESCAPED:killed ' + str(os.getppid()))
""",
    "become_root": """
    import os
    os.setuid(0)
    print('ESCAPED:uid0')
""",
    "mount_proc_again": """
    import ctypes
    libc = ctypes.CDLL(None)
    r = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)
    print('ESCAPED:mounted') if r == 0 else None
""",
    "chroot_break": """
    import os
    os.mkdir('/tmp/x')
    os.chroot('/tmp/x')
    print('ESCAPED:chroot')
""",
    "raise_limits": """
    import resource
    resource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6))
    print('ESCAPED:rlimit')
""",
    "device_node": """
    import os, stat
    os.mknod('/tmp/sda', stat.S_IFBLK | 0o600, os.makedev(8, 0))
    print('ESCAPED:mknod')
""",
    "host_disk_device": """
    print('ESCAPED:' + str(len(open('/dev/sda', 'rb').read(16))))
""",
    "sysfs": """
    import os
    print('ESCAPED:' + ','.join(os.listdir('/sys')))
""",
    "ptrace_scope": """
    import ctypes
    libc = ctypes.CDLL(None)
    r = libc.ptrace(16, 1, 0, 0)
    print('ESCAPED:ptrace') if r == 0 else None
""",
    "fill_tmp": """
    import os
    f = open('/tmp/fill', 'wb')
    for _ in range(2000):
        f.write(b'x' * 2**20)
    print('ESCAPED:wrote 2 GB')
""",
    "sigterm_ignored_forever": """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
""",
    "fork_bomb": """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
""",
    "thread_bomb": """
    import threading, time
    while True:
        threading.Thread(target=time.sleep, args=(60,)).start()
""",
    "memory_across_processes": """
    import os, time
    kids = []
    for _ in range(8):
        pid = os.fork()
        if pid == 0:
            x = b'x' * (300 * 2**20)
            time.sleep(4)
            os._exit(0)
        kids.append(pid)
    if all(os.waitpid(k, 0)[1] == 0 for k in kids):
        print('ESCAPED:2.4 GB held by 8 processes')
""",
    "output_flood": """
    import sys
    while True:
        sys.stdout.write('y' * 65536)
""",
}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Things on the host for the programs to reach for: a secret file, a unix and a TCP service, an abstract
    socket, the environment variable."""
    d = tmp_path_factory.mktemp("host")
    os.chmod(d, 0o755)
    secret_file = d / "secret.txt"
    secret_file.write_text(SECRET)
    os.chmod(secret_file, 0o644)
    servers = []
    stop = threading.Event()

    def serve(sock):
        sock.listen()
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.sendall(SECRET.encode())
                conn.close()
            except OSError:
                continue

    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(d / "service.sock"))
    os.chmod(d / "service.sock", 0o777)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0camelid-abstract")
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    for s in (unix, abstract, tcp):
        t = threading.Thread(target=serve, args=(s,), daemon=True)
        t.start()
        servers.append(s)
    os.environ["CAMELID_SECRET"] = SECRET
    yield {
        "secret_file": str(secret_file),
        "checkout": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "sock": str(d / "service.sock"),
        "port": tcp.getsockname()[1],
        "outside": str(d / "written-from-inside"),
    }
    del os.environ["CAMELID_SECRET"]
    stop.set()
    for s in servers:
        s.close()


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_escape_attempt(name, host):
    source = textwrap.dedent(ATTEMPTS[name]).format(**host)
    t0 = time.monotonic()
    r = run_python(source, Limits(wall_s=8, cpu_s=5))
    took = time.monotonic() - t0
    escaped = "ESCAPED:" in r.stdout or os.path.exists(host["outside"]) or SECRET in r.stdout + r.stderr
    if escaped:
        record("sandbox", "escape")
        pytest.fail(f"{name}: {r.stdout[-300:]!r}")
    if took > 30:
        record("sandbox", "hang")
        pytest.fail(f"{name}: the harness took {took:.0f} s")
    record("sandbox", "clean")
    assert not r.passed or name in ("parent_environment", "proc_environ_of_pid1", "host_processes", "ptrace_scope",
                                    "mount_proc_again")  # fmt: skip
