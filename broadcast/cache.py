"""The edge's clip cache: content-addressed files, hash-checked before every play.

A clip is stored as ``<sha256>.<ext>`` only once its bytes hash to its name;
a file that no longer does (a flipped bit on an SD card) is deleted and
fetched again, never played. Eviction keeps the cache under its budget and
never removes a clip that is still scheduled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from protocol.commands import ClipRef

log = logging.getLogger(__name__)


class Fetcher(Protocol):
    def fetch(self, url: str, part: Path, expected_bytes: int) -> None: ...


class ClipUnavailable(Exception):
    """The clip is not in the cache and could not be fetched (yet)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ClipCache:
    def __init__(
        self,
        directory: Path,
        fetcher: Fetcher,
        *,
        budget_bytes: int,
        on_fault: Callable[[str, str], None] = lambda sha, reason: None,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fetcher = fetcher
        self.budget_bytes = budget_bytes
        self._on_fault = on_fault
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._wanted: queue.Queue[ClipRef | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def _path(self, sha: str) -> Path:
        return self.dir / f"{sha}.clip"

    def _lock(self, sha: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sha, threading.Lock())

    def has(self, ref: ClipRef) -> bool:
        return self._path(ref.sha256).exists()

    def verified(self, ref: ClipRef) -> Path | None:
        """The clip's file if present and intact; a corrupt copy is removed."""
        path = self._path(ref.sha256)
        if not path.exists():
            return None
        if sha256_file(path) != ref.sha256:
            log.error("cached clip %s is corrupt: deleted, to be fetched again", ref.sha256)
            path.unlink(missing_ok=True)
            self._on_fault(ref.sha256, "corrupt")
            return None
        os.utime(path)  # last use, for eviction
        return path

    def ensure(self, ref: ClipRef) -> Path:
        """The clip's verified file, downloading (or resuming) it if needed."""
        with self._lock(ref.sha256):
            path = self.verified(ref)
            if path is not None:
                return path
            part = self.dir / f"{ref.sha256}.part"
            try:
                self._fetcher.fetch(ref.url, part, ref.bytes)
            except Exception as exc:
                raise ClipUnavailable(f"clip {ref.sha256[:12]}: {exc}") from exc
            if part.stat().st_size != ref.bytes or sha256_file(part) != ref.sha256:
                part.unlink(missing_ok=True)
                self._on_fault(ref.sha256, "hash_mismatch")
                raise ClipUnavailable(f"clip {ref.sha256[:12]}: downloaded bytes do not match")
            with part.open("rb") as f:
                os.fsync(f.fileno())
            final = self._path(ref.sha256)
            part.replace(final)
            return final

    def stats(self) -> dict[str, int]:
        files = list(self.dir.glob("*.clip"))
        return {"count": len(files), "bytes": sum(f.stat().st_size for f in files)}

    def evict(self, keep: Iterable[str]) -> list[str]:
        """Remove least recently used clips not in ``keep`` until under budget."""
        keep_set = set(keep)
        files = sorted(self.dir.glob("*.clip"), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in files)
        removed = []
        for f in files:
            if total <= self.budget_bytes:
                break
            if f.stem in keep_set:
                continue
            total -= f.stat().st_size
            f.unlink(missing_ok=True)
            removed.append(f.stem)
        return removed

    # prefetch in the background: a schedule arrives, its clips follow

    def prefetch(self, refs: Iterable[ClipRef]) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._prefetch_loop, name="prefetch", daemon=True
            )
            self._thread.start()
        for ref in refs:
            self._wanted.put(ref)

    def wait_prefetched(self) -> None:
        self._wanted.join()

    def close(self) -> None:
        self._wanted.put(None)

    def _prefetch_loop(self) -> None:
        while True:
            ref = self._wanted.get()
            try:
                if ref is None:
                    return
                self.ensure(ref)
            except ClipUnavailable as exc:
                log.warning("prefetch failed, will retry when needed: %s", exc)
            finally:
                self._wanted.task_done()
