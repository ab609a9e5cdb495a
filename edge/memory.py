"""Give freed heap back to the kernel, so an idle agent's resident memory is its real need.

Importing the libraries (msgspec building its types, cryptography, ssl)
allocates and frees several MiB that glibc keeps mapped in its heap; on a Pi
that counts against the amplifier's player and the kiosk's pages. glibc's
`malloc_trim(0)` returns those free pages. Elsewhere (musl, macOS) there is no
such call and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)


def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Collect cycles, then hand free heap pages back; True when the C library could."""
    gc.collect()
    if _TRIM is None:
        return False
    return bool(_TRIM(0))
