"""A bounded, per-process pool of open slides (least recently used is closed first).

The tile stream opens slides in two places of one DataLoader worker: the coordinate generator (tissue mask,
metadata) and the ``.map()`` that reads pixels. Both ask this pool, so a slide is opened once per worker, at
most ``capacity`` slides are open at a time (bounded file descriptors and memory) and an evicted slide is simply
reopened on its next use. Each worker process has its own pool (module state is per process).
"""

from __future__ import annotations

import os
from collections import OrderedDict

from pathfm.datasets_scripts.slide import DEFAULT_MPP_TOLERANCE, SlideReader, open_slide

__all__ = ["SlidePool", "slide_pool"]


class SlidePool:
    """LRU pool of open :class:`SlideReader` objects keyed by (path, mpp, reading options).

    Args:
        capacity: most slides open at once (>= 1).

    Attributes:
        region_failures: failed region reads per slide path in this process (see :meth:`failed`).
    """

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"slide pool capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.readers: OrderedDict[tuple, SlideReader] = OrderedDict()
        self.region_failures: dict[str, int] = {}

    def get(
        self,
        path: str | os.PathLike,
        mpp: float | None = None,
        mpp_tolerance: float = DEFAULT_MPP_TOLERANCE,
        default_mpp: float | None = None,
        icc_profile: str = "ignore",
        reader_kind: str = "openslide",
        threads: int = 1,
        mpp_source: str = "manifest",
    ) -> SlideReader:
        """The open reader of ``path`` (opened now if needed, evicting the least recently used).

        Args:
            path, mpp, mpp_tolerance, default_mpp, icc_profile: as :func:`open_slide`.
            reader_kind, threads: see :func:`open_slide` (``reader``, ``threads``).
            mpp_source: what ``mpp`` is (``manifest``, ``mpp_override``, ``catalogue``), used when the slide
                is opened now; not part of the key (the same value gives the same reader).

        Raises:
            SlideError: the slide cannot be opened (see :func:`open_slide`).
        """
        override = None if mpp is None else float(mpp)
        key = (str(path), override, float(mpp_tolerance), reader_kind, int(threads), default_mpp, icc_profile)
        reader = self.readers.get(key)
        if reader is not None:
            self.readers.move_to_end(key)
            return reader
        reader = open_slide(
            path, mpp=mpp, mpp_tolerance=mpp_tolerance, reader=reader_kind, threads=threads,
            default_mpp=default_mpp, icc_profile=icc_profile, mpp_source=mpp_source,
        )  # fmt: skip
        self.readers[key] = reader
        while len(self.readers) > self.capacity:
            _, old = self.readers.popitem(last=False)
            old.close()
        return reader

    def discard(self, path: str | os.PathLike) -> None:
        """Close every open reader of ``path``; the next :meth:`get` reopens it."""
        for key in [k for k in self.readers if k[0] == str(path)]:
            self.readers.pop(key).close()

    def release(self, path: str | os.PathLike) -> None:
        """The stream is done with ``path``: close its readers and forget its failure count."""
        self.discard(path)
        self.region_failures.pop(str(path), None)

    def failed(self, path: str | os.PathLike) -> int:
        """Count one failed region read of ``path`` and close its readers (OpenSlide handles stay in an error
        state after a failed read, so the next read reopens the slide).

        Returns:
            the slide's failures so far in this process.
        """
        self.discard(path)
        n = self.region_failures.get(str(path), 0) + 1
        self.region_failures[str(path)] = n
        return n

    def close(self) -> None:
        """Close every open reader."""
        while self.readers:
            _, reader = self.readers.popitem(last=False)
            reader.close()

    def __len__(self) -> int:
        return len(self.readers)


_POOL: SlidePool | None = None


def slide_pool(capacity: int) -> SlidePool:
    """This process's pool, created on first use; its capacity follows the latest request."""
    global _POOL
    if _POOL is None:
        _POOL = SlidePool(capacity)
    else:
        _POOL.capacity = max(1, int(capacity))
    return _POOL
