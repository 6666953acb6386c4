"""seccomp: a classic-BPF filter that makes socket(2) and io_uring_setup fail with EPERM."""

from __future__ import annotations

import errno
import os
import struct
import sys

from .common import _PR_SET_NO_NEW_PRIVS, _libc

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
