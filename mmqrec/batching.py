"""Micro-batching: concurrent single-user requests become one batched model call.

A worker thread takes the first waiting request, gathers more for up to ``max_wait_s`` (or until
``max_batch``), and serves every request with the same (k, exclude_seen) in one
:meth:`Recommender.recommend` call, so that throughput grows with concurrency instead of each
request paying for its own beam search. A failing batch is retried request by request, so one
bad request never fails its neighbours.

With ``workers`` > 1, that many threads gather and serve batches side by side: on a CPU each
model call then runs on one intra-op thread, and the cores are shared across requests rather
than across the operations of one call, which holds up when another process takes a core
(see :mod:`recdata.threads`).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from mmqrec.recommender import Recommendation, Recommender


@dataclass
class _Request:
    user_id: str
    k: int
    exclude_seen: bool
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Batch :meth:`Recommender.recommend` calls from many threads."""

    def __init__(self, rec: Recommender, *, max_batch: int = 64, max_wait_s: float = 0.005,
                 workers: int = 1) -> None:
        self.rec = rec
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.workers = max(1, int(workers))
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._count_lock = threading.Lock()
        self.batches_served = 0
        self.requests_served = 0
        self._threads = [threading.Thread(target=self._run, name=f"mmqrec-batcher-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, user_id: str, *, k: int, exclude_seen: bool) -> Future:
        request = _Request(str(user_id), int(k), bool(exclude_seen))
        self._queue.put(request)
        return request.future

    def recommend(self, user_id: str, *, k: int, exclude_seen: bool,
                  timeout: float | None = 120.0) -> Recommendation:
        return self.submit(user_id, k=k, exclude_seen=exclude_seen).result(timeout=timeout)

    def close(self) -> None:
        self._queue.put(None)  # each worker passes the stop signal on before it returns
        for thread in self._threads:
            thread.join(timeout=5)

    def _gather(self, first: _Request) -> list[_Request]:
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # let the loop see the stop signal after this batch
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.put(None)
                return
            batch = self._gather(first)
            groups: dict[tuple[int, bool], list[_Request]] = {}
            for request in batch:
                groups.setdefault((request.k, request.exclude_seen), []).append(request)
            for (k, exclude_seen), requests in groups.items():
                self._serve(requests, k, exclude_seen)

    def _serve(self, requests: list[_Request], k: int, exclude_seen: bool) -> None:
        try:
            results = self.rec.recommend([r.user_id for r in requests], k=k, exclude_seen=exclude_seen)
        except Exception as exc:  # noqa: BLE001 - isolate the failing request(s) below
            if len(requests) == 1:
                requests[0].future.set_exception(exc)
                return
            for request in requests:
                self._serve([request], k, exclude_seen)
            return
        with self._count_lock:
            self.batches_served += 1
            self.requests_served += len(requests)
        for request, result in zip(requests, results):
            request.future.set_result(result)
