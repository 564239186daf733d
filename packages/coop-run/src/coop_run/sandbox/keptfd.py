"""A descriptor a process makes once and keeps for its life (``KeptFd``).

coop-init's sealed copy and root's owner-only user namespace cost a few milliseconds
each to make, and every sandbox start of the process can use the same one. A forked
child may have closed the number, or reused it for another file, so the kept descriptor
is checked (same device and inode as when it was made) before each use and made again
when it is not the one kept.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class KeptFd:
    """``make()``'s descriptor (close-on-exec, never the caller's to close), made on first
    use and again when the kept one is gone; thread-safe."""

    def __init__(self, make: Callable[[], int]) -> None:
        self._make = make
        self._kept: tuple[int, int, int] | None = None  # (fd, st_dev, st_ino)
        self._lock = threading.Lock()

    def get(self) -> int:
        with self._lock:
            if self._kept is not None:
                fd, dev, ino = self._kept
                try:
                    st = os.fstat(fd)
                except OSError:
                    pass
                else:
                    if (st.st_dev, st.st_ino) == (dev, ino):
                        return fd
            fd = self._make()
            st = os.fstat(fd)
            self._kept = (fd, st.st_dev, st.st_ino)
            return fd
