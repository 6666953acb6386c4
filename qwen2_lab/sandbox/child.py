"""The child side: the supervisor, the order in which the confined child takes on every layer, and the runner.

Everything here runs in the supervisor (outside the new pid namespace, still the server's user) or in the confined child
(pid 1 inside it), never in the server. Only the confined child runs user code, and by then it holds no pipe that the
server trusts: the status line (the layers, or why the setup failed) is written and its pipe closed first. The child
imports this whole package at start-up, before any confinement, and never again: once the mounts, the run's own uid and
Landlock are in place, the package's files may be out of its reach.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from .audit import install_audit_hook
from .common import (
    CHANNEL_IN,
    CHANNEL_OUT,
    PR_SET_PDEATHSIG,
    RUN_UID_BASE,
    SETUP_FAILED,
    libc,
    missing_layers,
    send_line,
)
from .landlock import install_landlock
from .limits import drop_capabilities, set_rlimits
from .namespaces import chown_tree, enter_namespaces, private_mounts
from .seccomp import install_seccomp

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # the sandbox's own files, hidden from tracebacks


def main() -> None:
    """Entry point of the child process, the one argument being the config (run_python: _child_argv).

    The launcher appended the folder that holds qwen2_lab to sys.path, imported this module and removed the entry
    again. Forget the rest of that import too (the package's modules, the finders cached for its folders): the
    program then sees sys.modules and the import caches as when this code was one file run as a script.
    """
    root = os.path.dirname(os.path.dirname(_PACKAGE_DIR))
    top = __name__.split(".")[0]
    for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[name]
    for path in [p for p in sys.path_importer_cache if p == root or p.startswith(root + os.sep)]:
        del sys.path_importer_cache[path]
    _child_main(json.loads(sys.argv[1]))


def _child_main(config: dict) -> None:
    """Supervisor: enter new namespaces, fork the confined child, and exit the way it exited."""
    _lift_fds(config)
    namespaces = enter_namespaces(config["skip"])
    supervisor = os.getpid()  # in the server's pid namespace: unique among live processes, so a uid of the run's own
    pid = os.fork()
    if pid == 0:
        _confined_child(config, namespaces, supervisor)  # ends with SystemExit: the interpreter exits normally there
    send_line(config["status_fd"], f"child {pid}")  # the server kills it by pid, whatever group or session it is in
    for fd in _pipes(config):
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0 and -code not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(-code, signal.SIG_DFL)  # re-raise the child's signal so the server sees -signal too
    if code < 0:
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def _pipes(config: dict) -> list[int]:
    return [config["status_fd"], config["messages_fd"], *(config["channel"] or [])]


def _lift_fds(config: dict) -> None:
    """Move the server's pipes to fds >= 10, so that CHANNEL_IN and CHANNEL_OUT (3, 4) are free to take."""
    import fcntl

    lifted = {}
    for fd in _pipes(config):
        lifted[fd] = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
    config["status_fd"], config["messages_fd"] = lifted[config["status_fd"]], lifted[config["messages_fd"]]
    config["channel"] = [lifted[fd] for fd in config["channel"]] if config["channel"] else None


def _confined_child(config: dict, namespaces: set[str], supervisor: int) -> None:
    """Confined child: apply every remaining layer, report them, close the status pipe, then run main.py. Never runs
    user code unconfined, and never with the status pipe open."""
    status = config["status_fd"]
    try:
        layers = _confine(config, namespaces, supervisor)
        if config["strict"] and (missing := missing_layers(layers)):
            raise OSError(f"this machine does not give the required layers: {', '.join(missing)}")
    except BaseException as exc:  # noqa: BLE001 - any failure here must stop the run, whatever it is
        send_line(status, f"setup-failed {exc!r}")
        os.write(2, f"sandbox: setup failed: {exc!r}\n".encode())
        os._exit(SETUP_FAILED)
    send_line(status, "layers " + " ".join(layers))
    os.close(status)
    sys.argv = ["main.py"]
    sys.exit(_run_main("main.py"))


def _confine(config: dict, namespaces: set[str], supervisor: int) -> list[str]:
    """Apply the layers in the only order that works (mounts need root, Landlock needs no_new_privs...)."""
    import linecache  # noqa: F401 - the runner's own modules, loaded while the stdlib is surely readable
    import traceback  # noqa: F401
    import types  # noqa: F401

    workdir, skip = config["workdir"], set(config["skip"])
    own_user = os.geteuid() == 0 and "uid" not in skip
    uid = RUN_UID_BASE + supervisor if own_user else os.getuid()
    read_roots = [p for p in dict.fromkeys(os.path.realpath(p) for p in sys.path if p) if os.path.isdir(p)]
    layers = ["process", "env", "workdir", "deadline", "output-cap", "rlimits", *sorted(namespaces)]
    if "mountns" in namespaces and private_mounts(workdir, read_roots, config["disk_mb"], uid):
        layers.append("tmpfs")
    elif own_user:
        chown_tree(workdir, uid)
    os.chdir(workdir)
    set_rlimits(config, count_processes=own_user or "userns" in namespaces)
    if own_user:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # from here on: no capabilities, setuid(0) fails, and the process count is this run's own
        layers.append("uid")
    elif "userns" in namespaces:
        drop_capabilities()
    if sys.platform.startswith("linux"):
        libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
    if "landlock" not in skip and (abi := install_landlock(workdir, read_roots)):
        layers.append(f"landlock-v{abi}")
    if "seccomp" not in skip and install_seccomp():
        layers.append("seccomp")
    if config["channel"]:
        for fd, fixed in zip(config["channel"], (CHANNEL_IN, CHANNEL_OUT)):
            os.dup2(fd, fixed)
            os.close(fd)
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # a fresh `import ctypes` now fires an audit event the hook refuses
    _disarm_fork_exec()
    sys.path.insert(0, workdir)
    if "audit" not in skip:
        install_audit_hook(workdir, read_roots, config["messages_fd"])
        layers.append("audit")
    return layers


def _disarm_fork_exec() -> None:
    """_posixsubprocess.fork_exec forks without any audit event: replace it, so that `import subprocess` (and
    asyncio, which imports it) still works while spawning fails. Loading a fresh copy is refused by the hook."""
    import _posixsubprocess

    def refuse(*args, **kwargs):
        raise PermissionError("sandbox: starting processes is not allowed here")

    _posixsubprocess.fork_exec = refuse


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
        print("".join(traceback.format_exception_only(type(exc), exc)), end="", file=sys.stderr)
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
    """Drop this package's frames (the runner, the audit hook) from a TracebackException and its chained causes."""
    import traceback

    seen = _seen if _seen is not None else set()
    seen.add(id(report))
    frames = [frame for frame in report.stack if os.path.dirname(frame.filename) != _PACKAGE_DIR]
    report.stack = traceback.StackSummary.from_list(frames)
    for chained in (report.__cause__, report.__context__):
        if chained is not None and id(chained) not in seen:
            _without_sandbox_frames(chained, seen)
    return report
