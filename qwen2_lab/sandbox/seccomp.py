"""seccomp: a classic-BPF filter over the program's system calls. No sockets, no new processes (threads only), no
memory outside the address space that RLIMIT_AS bounds (anonymous files, System V shared memory and queues)."""

from __future__ import annotations

import errno
import os
import struct
import sys

from .common import PR_SET_NO_NEW_PRIVS, libc

# seccomp (Documentation/userspace-api/seccomp_filter.rst): a classic-BPF program over struct seccomp_data
# {int nr; u32 arch; u64 ip; u64 args[6]}. Syscall numbers per architecture (arch/*/entry/syscalls, unistd.h).
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_NAMES = "socket socketpair fork vfork execve execveat clone clone3 shmget shmat msgget mq_open memfd_create".split()
_NAMES += ["memfd_secret", "io_uring_setup"]
_NUMBERS = {  # aarch64 has no fork or vfork: glibc forks through clone
    "x86_64": (41, 53, 57, 58, 59, 322, 56, 435, 29, 30, 68, 240, 319, 447, 425),
    "aarch64": (198, 199, None, None, 221, 281, 220, 435, 194, 196, 186, 180, 279, 447, 425),
}
_SYSCALLS = {arch: {n: nr for n, nr in zip(_NAMES, numbers) if nr is not None} for arch, numbers in _NUMBERS.items()}
# Refused with EPERM. io_uring can open sockets without socket(2); the shared-memory calls create memory that no
# rlimit of this process counts; fork/vfork/execve: one process, one address space under RLIMIT_AS.
DENIED = (
    "socket socketpair fork vfork execve execveat shmget shmat msgget mq_open memfd_create memfd_secret io_uring_setup"
).split()
_CLONE_THREAD = 0x00010000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _EPERM, _ENOSYS = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS


def filter_program(machine: str) -> list[tuple[int, int, int, int]] | None:
    """The BPF program for this architecture as (code, jt, jf, k) tuples; None for an unknown one.

    Besides DENIED: clone(2) is allowed only with CLONE_THREAD (a thread, not a process); clone3 answers ENOSYS, as in
    Docker's default profile, because its flags sit in memory the filter cannot read (glibc then falls back to
    clone); x32 syscall numbers and other architectures' syscalls are refused (they would dodge the number checks).
    """
    if machine not in _AUDIT_ARCH:
        return None
    numbers = _SYSCALLS[machine]
    denied = [numbers[name] for name in DENIED if name in numbers]
    # Layout: arch check, nr load, x32 check, one JEQ per denied call, clone3, clone, ALLOW; then the clone flags
    # check (load, JSET, ALLOW) and the two refusals. Classic BPF jumps only forward.
    check_flags = 4 + len(denied) + 3
    eperm, enosys = check_flags + 3, check_flags + 4

    def jump(at: int, target: int) -> int:
        return target - at - 1

    program = [(_LD_W_ABS, 0, 0, 4), (_JEQ, 0, jump(1, eperm), _AUDIT_ARCH[machine]), (_LD_W_ABS, 0, 0, 0)]
    program.append((_JGE, jump(3, eperm), 0, 0x40000000))
    program += [(_JEQ, jump(len(program) + i, eperm), 0, nr) for i, nr in enumerate(denied)]
    program.append((_JEQ, jump(len(program), enosys), 0, numbers["clone3"]))
    program.append((_JEQ, jump(len(program), check_flags), 0, numbers["clone"]))
    program.append((_RET, 0, 0, _ALLOW))
    program.append((_LD_W_ABS, 0, 0, 16))  # args[0] of clone: the flags (low 32 bits, little-endian)
    program.append((_JSET, 0, jump(check_flags + 1, eperm), _CLONE_THREAD))
    program += [(_RET, 0, 0, _ALLOW), (_RET, 0, 0, _EPERM), (_RET, 0, 0, _ENOSYS)]
    assert len(program) == enosys + 1
    return program


def install_seccomp() -> bool:
    """Install the filter for good (inherited by every thread); False where seccomp filters are not available."""
    import ctypes

    program = filter_program(os.uname().machine) if sys.platform.startswith("linux") else None
    if program is None:
        return False
    filters = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filters)
    fprog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(buffer))  # struct sock_fprog
    c = libc()
    if c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or c.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter refused")  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    return True
