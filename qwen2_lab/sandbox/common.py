"""What both sides of the sandbox share: the nobody uid, the setup-failed exit code, libc, the status channel and
writing the work dir's files.

The child imports this module (like every module of the package) before any confinement: standard library only,
and ctypes imported inside functions (the note on imports in __init__.py says why).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

NOBODY = 65534
_SETUP_FAILED = 70  # exit code of a child whose confinement failed: user code never ran
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _report(fd: int, line: str) -> None:
    """One line on the status channel to the server; silently dropped if the program closed it."""
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def _write_files(workdir: str, files: Mapping[str, str | bytes]) -> None:
    """Write the program and its extra files into the work dir."""
    for name, content in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
