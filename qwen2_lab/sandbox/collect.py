"""The server watching a running sandbox: bounded output, the request channel, the deadline, and killing the whole
process group at the end."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

STATUS_CAP = 16_000  # bytes kept of the status and messages pipes (layers, blocked events)
REQUEST_CAP = 65_536  # bytes in one request line; a longer one ends the run
MAX_REQUESTS = 20_000  # requests in one run; past it the run ends


def collect(
    proc,
    pipes: dict[str, int],
    *,
    deadline: float,
    cap: int,
    serve: Callable[[str], str | None] | None = None,
    channel: tuple[int, int] | None = None,
) -> dict:
    """Read the program's pipes until EOF, the deadline or a cap, answer its requests; leave no process behind.

    pipes: name -> fd for "stdout", "stderr", "status", "messages". channel: (requests, replies) fds when `serve`
    is given: each request line is answered with serve(line) + newline, in order; serve returning None ends the run.
    Bounded: each output stream keeps at most `cap` bytes (the first byte past it ends the run), a request at most
    REQUEST_CAP bytes, a run at most MAX_REQUESTS requests, and a reply the program does not read ends the run
    instead of blocking this process. Returns the bytes read and why reading stopped early ("timeout", "output",
    "request", "served" or None).
    """
    import selectors

    names = {fd: name for name, fd in pipes.items()}
    caps = {name: STATUS_CAP if name in ("status", "messages") else cap for name in pipes}
    data = {name: bytearray() for name in pipes}
    requests = _Requests(serve, channel[1]) if serve and channel else None
    if requests:
        names[channel[0]] = "requests"
    stop, exited_at = None, None
    try:
        with selectors.DefaultSelector() as sel:
            for fd in names:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map() and stop is None:
                now = time.monotonic()
                if now >= deadline:
                    stop = "timeout"
                    break
                if exited_at is None and _has_exited(proc):
                    exited_at = now  # a leftover descendant may hold the pipes open: give it a moment, no more
                if exited_at is not None and now - exited_at > 0.2:
                    break
                for key, _ in sel.select(min(deadline - now, 0.1)):
                    chunk = os.read(key.fd, 65536)
                    name = names[key.fd]
                    if not chunk:
                        sel.unregister(key.fd)
                    elif name == "requests":
                        stop = requests.feed(chunk)
                    else:
                        room = caps[name] - len(data[name])
                        data[name] += chunk[: max(room, 0)]
                        if len(chunk) > room and name in ("stdout", "stderr"):
                            stop = "output"
                    if stop:
                        break
        while stop is None and not _has_exited(proc):  # it closed every pipe but still runs: wait, not forever
            if time.monotonic() >= deadline:
                stop = "timeout"
            time.sleep(0.02)
    finally:
        kill_group(proc)
        for fd in [*pipes.values(), *(channel or ())]:
            os.close(fd)
    return {"stop": stop, **{name: bytes(buf) for name, buf in data.items()}}


class _Requests:
    """The server's end of the request channel: split lines, answer each, refuse floods and unread replies."""

    def __init__(self, serve: Callable[[str], str | None], replies_fd: int):
        self.serve, self.replies_fd, self.pending, self.count = serve, replies_fd, bytearray(), 0
        os.set_blocking(replies_fd, False)

    def feed(self, chunk: bytes) -> str | None:
        """Answer every complete line in `chunk`; the reason to end the run, or None."""
        self.pending += chunk
        while (end := self.pending.find(b"\n")) >= 0:
            line, self.pending = bytes(self.pending[:end]), self.pending[end + 1 :]
            self.count += 1
            if end > REQUEST_CAP or self.count > MAX_REQUESTS:
                return "request"
            reply = self.serve(line.decode("utf-8", "replace"))
            if reply is None:
                return "served"
            data = (reply + "\n").encode()
            try:
                written = os.write(self.replies_fd, data)
            except BlockingIOError:
                written = 0
            if written < len(data):
                return "request"  # the program stopped reading its replies: it cannot be a round trip
        return "request" if len(self.pending) > REQUEST_CAP else None


def _has_exited(proc) -> bool:
    """True once the supervisor has exited, without reaping it (a zombie keeps its process group id reserved)."""
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def kill_group(proc) -> None:
    """SIGKILL the supervisor's whole process group (before reaping it, so the group id cannot be reused), then reap."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
