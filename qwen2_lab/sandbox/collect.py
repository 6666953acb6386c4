"""The server watching a running sandbox: bounded output, the request channel, the deadline, and ending every process
of the run at the end (the confined child through a pidfd, then the supervisor's process group)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

STATUS_CAP = 16_000  # bytes of the status and messages pipes (layers, blocked events); past it the run ends
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
    confined: ConfinedProcess | None = None,
) -> dict:
    """Read the program's pipes until EOF, the deadline or a cap, answer its requests; leave no process behind.

    pipes: name -> fd for "stdout", "stderr", "status", "messages". channel: (requests, replies) fds when `serve`
    is given: each request line is answered with serve(line) + newline, in order; serve returning None ends the run.
    Bounded: each output stream keeps at most `cap` bytes (the first byte past it ends the run), a request at most
    REQUEST_CAP bytes, a run at most MAX_REQUESTS requests, and a reply the program does not read ends the run
    instead of blocking this process; the status and messages pipes at most STATUS_CAP bytes each (past it the run
    ends: a flood there would cost this process CPU). confined learns the confined child's pid from the status pipe
    and is killed at the end. Returns the bytes read and why reading stopped early ("timeout", "output", "messages",
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
                    if not chunk:
                        sel.unregister(key.fd)
                    elif names[key.fd] == "requests":
                        stop = requests.feed(chunk)
                    else:
                        stop = _keep(names[key.fd], chunk, data, caps[names[key.fd]], confined)
                    if stop:
                        break
        while stop is None and not _has_exited(proc):  # it closed every pipe but still runs: wait, not forever
            if time.monotonic() >= deadline:
                stop = "timeout"
            time.sleep(0.02)
    finally:
        _end_run(proc, confined, bytes(data["status"]), pipes, channel)
    return {"stop": stop, **{name: bytes(buf) for name, buf in data.items()}}


def _keep(name: str, chunk: bytes, data: dict, cap: int, confined) -> str | None:
    """Keep what fits of a chunk read from pipe `name`; why the run must end when the pipe overflows, else None."""
    room = cap - len(data[name])
    data[name] += chunk[: max(room, 0)]
    if name == "status" and confined is not None:
        confined.learn(bytes(data["status"]))
    if len(chunk) > room:
        return "output" if name in ("stdout", "stderr") else "messages"
    return None


def _end_run(proc, confined, status: bytes, pipes: dict[str, int], channel) -> None:
    """Kill the confined child (by pidfd, wherever it went), then the supervisor's group; close the pipes."""
    if confined is not None:
        confined.learn(status + _drain(pipes["status"]))
        confined.kill()
    kill_group(proc)
    for fd in [*pipes.values(), *(channel or ())]:
        os.close(fd)


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
            except OSError:  # full (BlockingIOError) or closed by the program (BrokenPipeError)
                written = 0
            if written < len(data):
                return "request"  # the program stopped reading its replies: it cannot be a round trip
        return "request" if len(self.pending) > REQUEST_CAP else None


class ConfinedProcess:
    """The confined child of one run (pid 1 of its pid namespace where there is one), seen from the server.

    The supervisor writes `child PID` on the status pipe right after fork. The pid is trusted only while the
    supervisor, which this process has not reaped, is still its parent: then it cannot have been reused. From then
    on a pidfd names the process for good. Killing it ends the whole run: with a pid namespace the kernel kills
    every process in it; without one, seccomp leaves the program no other process. A program that cleared its
    parent-death signal and left the process group with setsid() is still reached this way.
    """

    def __init__(self, supervisor: int):
        self.supervisor, self.pid, self.pidfd = supervisor, None, None

    def learn(self, status: bytes) -> None:
        """Take the pid from the status pipe's bytes, once, if the supervisor is still its parent."""
        if self.pidfd is not None or not hasattr(os, "pidfd_open"):
            return
        line = next((s for s in status.decode("ascii", "replace").splitlines() if s.startswith("child ")), None)
        if line is None or not line[6:].isdigit():
            return
        try:
            pidfd = os.pidfd_open(int(line[6:]))
        except OSError:
            return  # gone already
        if _parent(int(line[6:])) == self.supervisor:
            self.pid, self.pidfd = int(line[6:]), pidfd
        else:
            os.close(pidfd)

    def cpu_seconds(self) -> float | None:
        """CPU time of the confined child so far, all its threads, in seconds (ns resolution); None if unknown."""
        if self.pid is None or not hasattr(time, "clock_gettime"):
            return None
        try:
            return time.clock_gettime(((~self.pid) << 3) | 2)  # the kernel's CPU clock of a process (CPUCLOCK_SCHED)
        except OSError:
            return None

    def kill(self) -> None:
        """SIGKILL the confined child through its pidfd and wait (at most a second) until it is gone."""
        if self.pidfd is None:
            return
        import select

        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            select.select([self.pidfd], [], [], 1.0)  # readable once it has exited
        except OSError:
            pass
        finally:
            os.close(self.pidfd)
            self.pidfd = None


def _parent(pid: int) -> int | None:
    """The parent pid of `pid`, from /proc (the field after the parenthesised command name)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _drain(fd: int) -> bytes:
    """What is waiting on a pipe now, without blocking (at most STATUS_CAP bytes)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, STATUS_CAP)
    except OSError:
        return b""


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
