"""seccomp: a classic-BPF filter over the program's system calls. No sockets, no new processes (threads only), no
memory outside the address space that RLIMIT_AS bounds (anonymous files, System V shared memory and queues), no
kernel keyrings, and every other call of Docker's default deny list that the architecture has."""

from __future__ import annotations

import errno
import os
import struct
import sys

from .common import PR_SET_NO_NEW_PRIVS, libc

# seccomp (Documentation/userspace-api/seccomp_filter.rst): a classic-BPF program over struct seccomp_data
# {int nr; u32 arch; u64 ip; u64 args[6]}. Syscall numbers per architecture (arch/*/entry/syscalls, unistd.h).
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# name: (x86_64, aarch64); None where the architecture has no such call (aarch64 forks through clone).
_TABLE = {
    # ours: no sockets, no processes, no memory outside RLIMIT_AS
    "socket": (41, 198), "socketpair": (53, 199), "fork": (57, None), "vfork": (58, None), "execve": (59, 221),
    "execveat": (322, 281), "shmget": (29, 194), "shmat": (30, 196), "msgget": (68, 186), "mq_open": (240, 180),
    "memfd_create": (319, 279), "memfd_secret": (447, 447), "io_uring_setup": (425, 425),
    # Docker's default profile (docs.docker.com/engine/security/seccomp, "Significant syscalls blocked"), each
    # present on the architecture; keyrings first: they are per user, not per namespace, and outlive the run
    "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    "acct": (163, 89), "bpf": (321, 280), "clock_adjtime": (305, 266), "clock_settime": (227, 112),
    "create_module": (174, None), "delete_module": (176, 106), "finit_module": (313, 273),
    "get_kernel_syms": (177, None), "get_mempolicy": (239, 236), "init_module": (175, 105), "ioperm": (173, None),
    "iopl": (172, None), "kcmp": (312, 272), "kexec_file_load": (320, 294), "kexec_load": (246, 104),
    "lookup_dcookie": (212, 18), "mbind": (237, 235), "mount": (165, 40), "move_pages": (279, 239),
    "name_to_handle_at": (303, 264), "nfsservctl": (180, 42), "open_by_handle_at": (304, 265),
    "perf_event_open": (298, 241), "personality": (135, 92), "pivot_root": (155, 41), "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271), "ptrace": (101, 117), "query_module": (178, None), "quotactl": (179, 60),
    "reboot": (169, 142), "set_mempolicy": (238, 237), "setns": (308, 268), "settimeofday": (164, 170),
    "swapon": (167, 224), "swapoff": (168, 225), "sysfs": (139, None), "_sysctl": (156, None), "umount2": (166, 39),
    "unshare": (272, 97), "uselib": (134, None), "userfaultfd": (323, 282), "ustat": (136, None),
    # the newer mount API, which Docker gates behind CAP_SYS_ADMIN like mount itself
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
}  # fmt: skip
_CLONE_NUMBERS = {"clone": (56, 220), "clone3": (435, 435)}
_SYSCALLS = {
    arch: {name: numbers[i] for name, numbers in {**_TABLE, **_CLONE_NUMBERS}.items() if numbers[i] is not None}
    for i, arch in enumerate(_AUDIT_ARCH)
}


def syscall_numbers(machine: str) -> dict[str, int]:
    """{name: number} of every call the filter names on this architecture (empty for an unknown one)."""
    return dict(_SYSCALLS.get(machine, {}))


# Refused with EPERM: every name in _TABLE, on the architectures that have it.
DENIED = tuple(_TABLE)
# Docker's list names these too, but no architecture here has them: stime, umount, vm86, vm86old.
DOCKER_ONLY_ON_OTHER_ARCHITECTURES = ("stime", "umount", "vm86", "vm86old")
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
