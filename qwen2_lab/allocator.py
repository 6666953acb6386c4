"""Repeated runs reuse their memory: glibc's malloc is asked to keep what a dropped trace frees.

A trace that keeps every site holds hundreds of MB of tensors. When it is dropped, glibc may hand most of that memory
back to the kernel (blocks over its mmap threshold, 128 KB at first, are mapped and unmapped one by one, and the top
of the heap is trimmed; the threshold slides up as mapped blocks are freed, so how much goes back depends on what the
process did before), and then the next trace pays for fresh pages again: a page fault and a zeroed page for every 4 KB it writes. A sweep
or an explorer redrawing traces over and over pays that every time. Asked to keep freed memory (mmap only for blocks
over 32 MiB, the most glibc allows, and no trimming below 1 GiB), the process reuses it instead: repeated traces then
fault only for blocks over 32 MiB (the logits of a long input), as HF's own forward does.

The cost: the process keeps the memory its largest run needed instead of handing it back while idle. It is done
once per process, on Linux with glibc, when a Lab on the CPU is made (CUDA's caching allocator already reuses GPU
memory); set QWEN2_LAB_KEEP_FREED_MEMORY=0 to leave malloc as it is. bench/memory_reuse.py measures the effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**30

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (once per process); True when it now does."""
    global _done
    if _done is None:
        _done = False
        if os.environ.get("QWEN2_LAB_KEEP_FREED_MEMORY", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
                return False
            _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
