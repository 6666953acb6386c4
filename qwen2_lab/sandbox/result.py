"""SandboxResult, and how the server turns a finished run (exit status, output, status channel) into one."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from .common import _SETUP_FAILED


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did. `returncode` is negative for a signal (-9: SIGKILL), None if it never started."""

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


def _result(returncode, streams, duration, timeout, memory_mb, max_output) -> SandboxResult:
    """Turn raw bytes and exit status into a SandboxResult with a plain-words reason for any limit hit."""
    stderr = streams["stderr"].decode("utf-8", "replace")
    status = streams["status"].decode("utf-8", "replace").splitlines()
    layers = next((line.split()[1:] for line in status if line.startswith("layers ")), [])
    blocked = tuple(line[len("blocked ") :] for line in status if line.startswith("blocked "))
    reason = {"timeout": f"wall-clock timeout after {timeout:g} s", "output": f"output over {max_output:,} bytes"}
    killed_reason = reason.get(streams["stop"]) or _limit_reason(returncode, stderr, memory_mb)
    return SandboxResult(
        returncode=returncode,
        stdout=streams["stdout"].decode("utf-8", "replace"),
        stderr=stderr,
        duration=duration,
        timed_out=streams["stop"] == "timeout",
        killed_reason=killed_reason,
        truncated=streams["stop"] == "output",
        blocked=blocked,
        layers=tuple(layers),
    )


def _limit_reason(returncode: int | None, stderr: str, memory_mb: int) -> str | None:
    """Name the limit behind an exit status: a signal, the memory limit, or a failed confinement."""
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
    if returncode == _SETUP_FAILED and last.startswith("sandbox: setup failed"):
        return last
    return None
