"""Micro-batching: concurrent requests share one ``predict_proba`` call.

A scikit-learn pipeline costs nearly the same for 1 row as for 100 (the time goes into per-call
work: input checks, column selection, one pass per tree), so under concurrency the cheapest thing
to do is score the rows of every waiting request together.

A request arriving while the predictor is idle and nothing else is expected is scored at once, so
nothing is added to the single-client path; requests arriving while it is busy queue up, and the
moment it is free it takes all of them (up to ``max_batch_rows``) as the next batch. So the batch
size follows the load: 1 at low traffic, about the number of concurrent clients at high traffic.

Under steady concurrency one more thing matters: the clients answered by a batch send their next
requests a moment later, and a batch started on the first of them would leave the others for the
batch after (batches then alternate small/large and throughput halves). So when the previous batch
finished moments ago, the batcher expects as many requests as were in the system then (the batch
it answered plus those already queued) and waits for them at most ``max_wait`` seconds. With one
client that expectation is 1 and there is never a wait; after an idle gap it resets to 1.

Batches run on one dedicated thread (``executor``) so the event loop keeps reading requests while a
batch is scored. A request that is alone (nothing queued, nothing expected) is scored on the event
loop itself when ``inline_when_alone`` is set: at low traffic that spares two thread hand-offs per
request, and there is nothing to overlap with anyway. ``executor=None`` scores everything inline.

The queue is bounded: when more than ``max_queued_rows`` rows already wait, a new request is
refused at once with :class:`QueueFull` (the API answers 503 with ``Retry-After``) instead of
growing the backlog and every request's latency without limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

#: A gap of this many ``max_wait`` since the last batch means the traffic paused: expect 1 request again.
IDLE_RESET = 10


class QueueFull(Exception):
    """More rows wait to be scored than the batcher holds: the request is refused (503)."""


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Job:
    """The rows of one request waiting to be scored, and where its result goes."""

    __slots__ = ("error", "future", "result", "rows")

    def __init__(self, rows: Sequence[Any], future: asyncio.Future[Any]):
        self.rows = rows
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Collects concurrent jobs and hands them to ``process`` as one batch at a time.

    ``process(jobs)`` runs on the executor thread; it sets ``job.result`` (or ``job.error``) of
    every job it is given. If it raises, every job of that batch fails with the exception.
    """

    def __init__(
        self,
        process: Callable[[list[Job]], None],
        *,
        max_batch_rows: int = 1024,
        executor: ThreadPoolExecutor | None = None,
        max_wait: float = 0.0,
        inline_when_alone: bool = False,
        max_queued_rows: int = 50_000,
    ):
        self._process = process
        self.max_batch_rows = max_batch_rows
        self.max_queued_rows = max_queued_rows
        self.refused = 0
        self._executor = executor
        self.max_wait = max_wait
        self.inline_when_alone = inline_when_alone
        self.inline = 0
        self._pending: deque[Job] = deque()
        self._pending_rows = 0
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        self.waits = 0
        #: Requests the next batch should wait for (see the module docstring), and when the last batch ended.
        self._expected = 1
        self._last_done = 0.0
        self._waiter: asyncio.Future[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, rows: Sequence[Any]) -> Any:
        """Score ``rows`` with the next batch; returns what ``process`` set as the job's result."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if self._pending and self._pending_rows + len(rows) > self.max_queued_rows:
            self.refused += 1
            raise QueueFull(f"{self._pending_rows} rows are waiting to be scored (the limit is {self.max_queued_rows}); retry shortly")
        loop = asyncio.get_running_loop()
        job = Job(rows, loop.create_future())
        self._pending.append(job)
        self._pending_rows += len(rows)
        waiter = self._waiter
        if waiter is not None and self._enough():
            _wake(waiter)
        if self._drainer is None:
            # Started as a task, so requests that arrived in the same loop iteration join this batch.
            self._drainer = loop.create_task(self._drain())
        return await job.future

    def _enough(self) -> bool:
        return len(self._pending) >= self._expected or self._pending_rows >= self.max_batch_rows

    async def _wait_for_expected(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give the requests of clients answered moments ago up to ``max_wait`` to arrive."""
        if loop.time() - self._last_done > IDLE_RESET * self.max_wait:
            self._expected = 1  # an idle gap (or the first request): nobody is about to come back
        if self.max_wait <= 0 or self._enough():
            return
        self.waits += 1
        waiter = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(self.max_wait, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _take(self) -> list[Job]:
        """The next batch: waiting jobs in arrival order, whole jobs only, up to max_batch_rows rows."""
        batch = [self._pending.popleft()]
        rows = len(batch[0].rows)
        while self._pending and rows + len(self._pending[0].rows) <= self.max_batch_rows:
            job = self._pending.popleft()
            rows += len(job.rows)
            batch.append(job)
        self._pending_rows -= rows
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                await self._wait_for_expected(loop)
                batch = self._take()
                self.batches += 1
                try:
                    # Alone (one request, nothing queued or expected): score on the loop, sparing two thread hand-offs.
                    alone = self.inline_when_alone and len(batch) == 1 and not self._pending and self._expected <= 1
                    if self._executor is None or alone:
                        self.inline += alone
                        self._process(batch)
                    else:
                        await loop.run_in_executor(self._executor, self._process, batch)
                except Exception as exc:
                    log.exception("scoring a batch of %d requests failed", len(batch))
                    for job in batch:
                        job.error = exc
                for job in batch:
                    if job.future.done():  # the request was cancelled (client went away)
                        continue
                    if job.error is not None:
                        job.future.set_exception(job.error)
                    else:
                        job.future.set_result(job.result)
                # The clients just answered will be back in a moment, besides those already waiting.
                self._expected = len(batch) + len(self._pending)
                self._last_done = loop.time()
        finally:
            self._drainer = None

    async def close(self) -> None:
        """Refuse new jobs and wait until every queued job has been scored."""
        self._closed = True
        while self._drainer is not None:
            await asyncio.shield(self._drainer)
