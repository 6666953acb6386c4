"""rlimits (CPU, address space, file size, open files, core dumps, processes) and dropping a user namespace's
capabilities."""

from __future__ import annotations

import math
import struct

from .common import libc


def set_rlimits(config: dict, count_processes: bool) -> None:
    """CPU, address space, file size, open files, core dumps; processes (and threads) only where the count is this
    run's alone: its own uid, or its own user namespace."""
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


def drop_capabilities() -> None:
    """capset(2) to empty sets: the capabilities a new user namespace grants are of no use to the program."""
    import ctypes

    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # two {effective, permitted, inheritable} u32 triples, all zero
    if libc().capset(ctypes.c_char_p(header), ctypes.c_char_p(data)) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
