"""Landlock: the kernel lets the program read only the stdlib, system libraries and two devices, write only its
work dir, and (by ABI) make no TCP connection and send no signal out of the sandbox."""

from __future__ import annotations

import os
import stat
import struct
import sys

from .common import PR_SET_NO_NEW_PRIVS, libc

# Landlock (Documentation/userspace-api/landlock.rst). Syscall numbers are the same on every architecture.
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1, 2, 4, 8
_LL_MAKE_CHAR, _LL_MAKE_BLOCK, _LL_TRUNCATE = 1 << 6, 1 << 11, 1 << 14
_LL_SYSTEM_LIBS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache")
_LL_DEVICES = {"/dev/null": _LL_READ_FILE | _LL_WRITE_FILE | _LL_TRUNCATE, "/dev/urandom": _LL_READ_FILE}


def install_landlock(workdir: str, read_roots: list[str]) -> int | None:
    """Restrict this process (and its children) to the allowed paths, no TCP, no signals out. Returns the ABI used.

    Read-only: the stdlib (read_roots), system libraries for extension modules, two devices. Read-write, but no
    execute and no device nodes: the work dir. Nothing else, and nothing can ever be executed.
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    c = libc()
    abi = c.syscall(_LL_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return None
    handled_fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (_LL_TRUNCATE if abi >= 3 else 0)
    handled_fs |= 1 << 15 if abi >= 5 else 0  # IOCTL_DEV
    net = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP, with no rule allowing any port
    scoped = 0b11 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    attr = struct.pack("=QQQ", handled_fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = c.syscall(_LL_CREATE, ctypes.c_char_p(attr), len(attr), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        rules = {path: _LL_READ_FILE | _LL_READ_DIR for path in [*read_roots, *_LL_SYSTEM_LIBS]}
        rules |= _LL_DEVICES
        rules[workdir] = handled_fs & ~(_LL_EXECUTE | _LL_MAKE_CHAR | _LL_MAKE_BLOCK)
        for path, access in rules.items():
            _landlock_allow(c, ruleset, path, access & handled_fs)
        if c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or c.syscall(_LL_RESTRICT, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def _landlock_allow(c, ruleset: int, path: str, access: int) -> None:
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
        if c.syscall(_LL_ADD_RULE, ruleset, 1, ctypes.c_char_p(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    finally:
        os.close(fd)
