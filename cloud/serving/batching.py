"""Micro-batching across streams: frames from any stream that reach the same stage together go through the network
as one batch (the synthesis of small frames, the recognizer's embedding), on one thread per stage.

A batch is what is waiting when the stage's thread is free, topped up for at most ``max_wait_s`` and cut at
``max_batch``; items are grouped by a key (model and latent shape for the synthesis) and each group is one call.
Under load the queue fills while a batch runs, so batches grow without waiting; at one stream a frame waits at
most ``max_wait_s`` per stage. Batched inference gives each item the same answer as alone up to float rounding
(in the last bits; the concurrency test bounds similarities at 1e-5), not bit for bit: ``facelink serve
--batching off`` is the per-frame path.
"""
from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any

_STOP = object()


class MicroBatcher:
    """``submit(key, item)`` from any thread → a future of ``fn(key, [items])[i]``, computed on this batcher's
    thread."""

    def __init__(self, fn: Callable[[Hashable, list[Any]], list[Any]], max_batch: int = 16, max_wait_s: float = 0.002,
                 name: str = "batch", on_batch: Callable[[int], None] | None = None):
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.on_batch = on_batch
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"facelink-{name}", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, key: Hashable, item: Any) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._closed:
            fut.set_exception(RuntimeError("the server is shutting down"))
            return fut
        self._q.put((key, item, fut))
        return fut

    def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout)

    def _take(self) -> tuple[list, bool]:
        first = self._q.get()
        if first is _STOP:
            return [], True
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                left = deadline - time.monotonic()
                nxt = self._q.get_nowait() if left <= 0 else self._q.get(timeout=left)
            except queue.Empty:
                break
            if nxt is _STOP:
                stop = True
                break
            batch.append(nxt)
        return batch, stop

    def _run(self) -> None:
        while True:
            batch, stop = self._take()
            groups: dict[Hashable, list] = defaultdict(list)
            for entry in batch:
                groups[entry[0]].append(entry)
            for key, entries in groups.items():
                live = [e for e in entries if e[2].set_running_or_notify_cancel()]
                if not live:
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(live))
                try:
                    results = self.fn(key, [e[1] for e in live])
                    if len(results) != len(live):
                        raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
                except BaseException as exc:  # noqa: BLE001 - every waiting frame gets the failure
                    for e in live:
                        e[2].set_exception(exc)
                else:
                    for e, r in zip(live, results):
                        e[2].set_result(r)
            if stop:
                while True:  # fail whatever arrived after the stop
                    try:
                        e = self._q.get_nowait()
                    except queue.Empty:
                        return
                    if e is not _STOP and e[2].set_running_or_notify_cancel():
                        e[2].set_exception(RuntimeError("the server is shutting down"))
