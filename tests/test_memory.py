"""The agent hands freed heap back to the kernel after start-up."""

from __future__ import annotations

import platform

from edge.memory import release_free_memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_release_returns_freed_heap_on_glibc() -> None:
    assert platform.libc_ver()[0] == "glibc"  # the machines we run on: Debian, Raspberry Pi OS
    # 40 MiB in small blocks from malloc's heap (not mmap), freed, leave the heap
    # mapped until trimmed; the bytearrays stay under glibc's mmap threshold.
    blocks = [bytearray(64 * 1024) for _ in range(640)]
    del blocks[:-1]  # keep the top block so that the heap cannot shrink from its end
    before = _rss_bytes()
    assert release_free_memory() is True
    assert before - _rss_bytes() > 20 * 1024 * 1024
