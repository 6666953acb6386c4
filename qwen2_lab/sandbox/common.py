"""What both sides of the sandbox share: the run's uid, the fixed file descriptors of the request channel, libc, the
status lines and writing the work dir's files.

The child imports this module (like every module of the package) before any confinement: standard library only,
and ctypes imported inside functions (the note on imports in __init__.py says why).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

RUN_UID_BASE = 0x7F000000  # a run started as root becomes uid RUN_UID_BASE + its supervisor's pid: its own user
SETUP_FAILED = 70  # exit code of a child whose confinement failed: user code never ran
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
CHANNEL_IN, CHANNEL_OUT = 3, 4  # with run_python(serve=...): the program reads replies on 3, writes requests on 4
# What strict mode requires: the layers that hold without root and without namespaces (a normal user in a container).
REQUIRED_LAYERS = ("process", "rlimits", "landlock", "seccomp")


def missing_layers(layers) -> list[str]:
    """The REQUIRED_LAYERS not among `layers` (Landlock counts at any ABI: "landlock-v3")."""
    return [need for need in REQUIRED_LAYERS if not any(have.split("-v")[0] == need for have in layers)]


def libc():
    """The C library, with errno kept for ctypes.get_errno()."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def send_line(fd: int, line: str) -> None:
    """One line on a status pipe to the server; silently dropped if the pipe is gone."""
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def write_files(workdir: str, files: Mapping[str, str | bytes]) -> None:
    """Write the program and its extra files into the work dir."""
    for name, content in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
