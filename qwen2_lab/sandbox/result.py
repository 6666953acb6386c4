"""SandboxResult, and how the server turns a finished run (exit status, output, status pipes) into one."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from .collect import MAX_REQUESTS, REQUEST_CAP, STATUS_CAP
from .text import clean_text


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did. `returncode` is negative for a signal (-9: SIGKILL), None if it never started.

    stdout, stderr and blocked went through clean_text (no control characters, no ANSI sequences). `layers` comes
    from the sandbox before user code ran; `blocked` from the audit hook inside the program's process, so a hostile
    program could add to it: it explains, it never decides anything.
    """

    returncode: int | None
    stdout: str
    stderr: str
    duration: float  # wall-clock seconds, start to cleanup
    timed_out: bool = False
    killed_reason: str | None = None  # why the sandbox stopped or a limit ended the program
    truncated: bool = False  # stdout or stderr passed max_output and was cut
    blocked: tuple[str, ...] = ()  # operations the audit hook refused, e.g. "os.fork"
    layers: tuple[str, ...] = ()  # defences that were active in this run

    @property
    def ok(self) -> bool:
        """True when the program exited 0 on its own, within every limit."""
        return self.returncode == 0 and self.killed_reason is None and not self.truncated

    @property
    def summary(self) -> str:
        """One line for a log or a UI: outcome, time, and the last line of stderr when it failed."""
        took = f"in {self.duration:.2f} s"
        if self.ok:
            head = f"ok: exit 0 {took}"
        elif self.killed_reason:
            head = f"stopped: {self.killed_reason} {took}"
        else:
            head = f"failed: exit {self.returncode} {took}"
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        if not self.ok and lines and not lines[-1].startswith("  "):
            head += f": {lines[-1].strip()[:160]}"
        if self.blocked:
            head += f" [blocked: {', '.join(dict.fromkeys(b.split()[0] for b in self.blocked))}]"
        return head


STOP_REASONS = {
    "output": "output over {max_output:,} bytes",
    "messages": f"over {STATUS_CAP:,} bytes written to the sandbox's messages pipe",
    "request": f"a request refused (over {REQUEST_CAP:,} bytes, past {MAX_REQUESTS:,} requests, or replies unread)",
    "served": "stopped by the server's request handler",
    "timeout": "wall-clock timeout after {timeout:g} s",
}


def to_result(returncode, streams, duration, timeout, memory_mb, max_output) -> SandboxResult:
    """Turn raw bytes and exit status into a SandboxResult with a plain-words reason for any limit hit."""
    decode = lambda name: clean_text(streams[name].decode("utf-8", "replace"))  # noqa: E731
    stderr = decode("stderr")
    layers, setup_failed = read_status(streams["status"])
    blocked = tuple(line[len("blocked ") :] for line in decode("messages").splitlines() if line.startswith("blocked "))
    stop = streams["stop"]
    killed_reason = STOP_REASONS[stop].format(timeout=timeout, max_output=max_output) if stop else None
    if setup_failed is not None:
        killed_reason = f"sandbox: setup failed: {clean_text(setup_failed)}"
    return SandboxResult(
        returncode=returncode,
        stdout=decode("stdout"),
        stderr=stderr,
        duration=duration,
        timed_out=stop == "timeout",
        killed_reason=killed_reason or limit_reason(returncode, stderr, memory_mb),
        truncated=stop == "output",
        blocked=blocked[:20],
        layers=tuple(layers),
    )


def read_status(status: bytes) -> tuple[list[str], str | None]:
    """(layers, why the setup failed or None) from the status pipe, written before user code ran: the confined
    child's one line ("layers ..." or "setup-failed ..."); the supervisor's "child PID" line is skipped."""
    for line in status.decode("utf-8", "replace").splitlines():
        if line.startswith("layers "):
            return line.split()[1:], None
        if line.startswith("setup-failed "):
            return [], line[len("setup-failed ") :]
    return [], None


def limit_reason(returncode: int | None, stderr: str, memory_mb: int) -> str | None:
    """Name the limit behind an exit status: a signal, or the memory limit (a MemoryError the program did not catch)."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return "CPU time limit"
        if sig == signal.SIGXFSZ:
            return "file size limit"
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    if returncode and last.startswith("MemoryError"):
        return f"memory limit ({memory_mb} MB)"
    return None
