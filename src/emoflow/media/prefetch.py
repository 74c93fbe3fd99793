"""Decoding ahead in a thread: a bounded queue of frames between the decoder and its consumer.

PyAV decodes and converts with the GIL released, so a thread that decodes the next frames while
the faces stage works on this one uses the core that the stage (dlib holds the GIL, on one
core) leaves idle. The queue is bounded (``depth`` frames), so memory stays that of a few
frames whatever the clip's length; an error in the decoder (an undecodable file, a limit, a
cancellation) is raised in the consumer, at the frame where it happened.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

DEPTH = 8  # frames decoded ahead (640×480 RGB: 7 MB)
_END = object()


class Prefetch:
    """Iterate ``source`` in a thread, ``depth`` items ahead. Other attributes (``at``,
    ``times``, ``announced`` of a ``VideoFrames``) are the source's own; read ``times`` once the
    iteration has ended. Leaving the loop early stops the thread (``close``)."""

    def __init__(self, source: Iterable[Any], depth: int = DEPTH) -> None:
        self._source = source
        self._depth = depth
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not the source's (and no recursion before __init__ ran)
            raise AttributeError(name)
        return getattr(self._source, name)

    def __iter__(self) -> Iterator[Any]:
        q: queue.Queue[Any] = queue.Queue(self._depth)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(q,), daemon=True,
                                        name="emoflow-decode")  # fmt: skip
        self._thread.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, _Raised):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoding thread and wait for it (it finishes the frame it is on)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, q: queue.Queue[Any]) -> None:
        try:
            for item in self._source:
                if not self._put(q, item):
                    return
            self._put(q, _END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(q, _Raised(exc))

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Wait for room, unless the consumer has gone: False then."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
