"""The audit hook (PEP 578): installed just before user code, it turns forbidden operations into a clear
PermissionError and a `blocked` line on the messages pipe.

Messages only, never a boundary: it runs inside the program's own process, so the program can reach it (its frame
shows in the traceback of a refused call), load modules past it (importlib.import_module("_ctypes")), or write fake
`blocked` lines on its pipe. Every limit that must hold is enforced by the kernel layers; the hook explains them.
"""

from __future__ import annotations

import os
import sys

from .common import send_line

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


def install_audit_hook(workdir: str, read_roots: list[str], messages_fd: int) -> None:
    """Refuse the operations listed above with PermissionError; report the first 20 on the messages pipe."""
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
            send_line(messages_fd, f"blocked {reason}")
        raise PermissionError(f"sandbox: {reason} is not allowed here")

    sys.addaudithook(hook)
