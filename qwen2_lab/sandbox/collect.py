"""The server reading a running sandbox: bounded output, the deadline, and killing the whole process group."""

from __future__ import annotations

import os
import signal
import time

_STATUS_CAP = 16_000  # bytes of the child's status channel (layers, blocked events) that the server keeps


def _collect(proc, status_fd: int, *, deadline: float, cap: int) -> dict:
    """Read stdout, stderr and the status channel until EOF, the deadline or the cap; leave no process behind.

    Bounded: each stream keeps at most `cap` bytes; the first byte past it ends the run. Returns the bytes read
    and why reading stopped early ("timeout", "output" or None).
    """
    import selectors

    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr", status_fd: "status"}
    caps = {"stdout": cap, "stderr": cap, "status": _STATUS_CAP}
    data = {name: bytearray() for name in names.values()}
    stop, exited_at = None, None
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
                    continue
                room = caps[name] - len(data[name])
                data[name] += chunk[: max(room, 0)]
                if len(chunk) > room and name != "status":
                    stop = "output"
                    break
    while stop is None and not _has_exited(proc):  # it closed every pipe but still runs: wait for it, not forever
        if time.monotonic() >= deadline:
            stop = "timeout"
        time.sleep(0.02)
    _kill_group(proc)
    os.close(status_fd)
    proc.stdout.close()
    proc.stderr.close()
    return {"stop": stop, **{name: bytes(buf) for name, buf in data.items()}}


def _has_exited(proc) -> bool:
    """True once the supervisor has exited, without reaping it (a zombie keeps its process group id reserved)."""
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc) -> None:
    """SIGKILL the supervisor's whole process group (before reaping it, so the group id cannot be reused), then reap."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
