"""`camelid chat` as a person uses it, on a real pseudo-terminal: the loading line, readline editing and history,
Ctrl-C that stops a reply and keeps the session, and a conversation that outgrows the context."""

import os
import pty
import select
import subprocess
import sys
import time


def _env(home):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HOME": str(home), "TERM": "xterm"}


class Terminal:
    def __init__(self, args, home):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: camelid on the terminal's slave side
            os.execve(sys.executable, [sys.executable, "-m", "camelid", *args], _env(home))
        self.out = ""

    def read_until(self, needle: str, timeout: float = 300) -> str:
        end = time.monotonic() + timeout
        while needle not in self.out:
            if time.monotonic() > end:
                raise AssertionError(f"{needle!r} not seen; the terminal shows:\n{self.out[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], 1)
            if ready:
                try:
                    self.out += os.read(self.fd, 4096).decode("utf-8", "replace")
                except OSError:  # the child exited
                    break
        start = self.out.index(needle) + len(needle)
        seen, self.out = self.out[:start], self.out[start:]
        return seen

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def test_chat_on_a_terminal(tmp_path):
    t = Terminal(["chat", "--temperature", "0", "--max-new-tokens", "300"], tmp_path)
    assert "loading smollm2-135m (gguf, 98 MB)..." in t.read_until("Ctrl-D quits")
    t.read_until("> ")

    # Ctrl-C while the reply streams: the reply stops, the session goes on
    t.type("Write a very long story about a dragon and a knight.\r")
    t.read_until("dragon and a knight.")
    deadline = time.monotonic() + 120
    while len(t.out.strip()) < 40 and time.monotonic() < deadline:  # some of the reply has been shown
        ready, _, _ = select.select([t.fd], [], [], 0.2)
        if ready:
            t.out += os.read(t.fd, 4096).decode("utf-8", "replace")
    t.type("\x03")
    assert "[stopped]" in t.read_until("> ")

    # readline: Ctrl-A goes to the start of the line, and the edited line is what the model gets
    t.type("France?\x01What is the capital of \r")
    assert "Paris" in t.read_until("> ")
    time.sleep(1)  # readline is waiting for the line (the prompt is written before it is)
    t.type("\x03")  # Ctrl-C at the prompt: a fresh prompt, not the end
    t.read_until("> ")
    t.type("/exit\r")
    assert t.exit_code() == 0
    history = (tmp_path / ".camelid_history").read_text().splitlines()
    assert "What is the capital of France?" in history


def test_chat_drops_the_oldest_turns_when_the_context_fills(debug_checkpoint):
    turns = "".join(f"turn {i}: " + "tell me more about the weather " * 12 + "\n" for i in range(6))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-m", "camelid", "chat", "--model", str(debug_checkpoint), "--max-new-tokens", "8"],
        input=turns + "/exit\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "outgrew the 256-token context: dropped the oldest" in out.stderr
    assert out.stdout.count("\n") >= 6  # every turn got a reply
