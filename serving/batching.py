"""Dynamic batching: concurrent requests of the same image size share one model call.

A request is a batch of rows (N x ...). One worker task per model takes the oldest
request, then gathers more requests of the same shape until the batch holds
``max_batch_size`` rows or ``max_delay_s`` has passed since the first one arrived;
requests of another shape wait for a later batch, in arrival order. The model runs in a
single worker thread (ONNX Runtime releases the GIL and already uses every core for one
call, so two concurrent calls would only compete).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger("cyclegan.serving")


@dataclass(eq=False)  # compared by identity: pending.remove() must not compare arrays
class _Item:
    x: np.ndarray
    future: asyncio.Future


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 8, max_delay_s: float = 0.005,
                 on_batch: Callable[[int, float], None] | None = None, name: str = "model"):
        self.run, self.max_batch_size, self.max_delay_s = run, max_batch_size, max_delay_s
        self.on_batch, self.name = on_batch, name
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")
        self._task.add_done_callback(self._died)

    def _died(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("batcher stopped by an error", exc_info=task.exception(), extra={"fields": {"model": self.name}})

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Run ``x`` (N x ...) as part of a batch; returns its N output rows."""
        if not self.running:
            raise RuntimeError(f"batcher {self.name} is not running")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(x, future))
        return await future

    async def _next_batch(self, pending: collections.deque) -> tuple[list[_Item], bool]:
        """(items of one shape, stop requested)."""
        loop = asyncio.get_running_loop()
        stopping = False
        first = pending.popleft() if pending else await self._queue.get()
        if first is None:
            return [], True
        batch, rows = [first], len(first.x)
        shape = first.x.shape[1:]
        # Earlier arrivals of the same shape that did not fit a previous batch go first.
        for item in list(pending):
            if item.x.shape[1:] == shape and rows + len(item.x) <= self.max_batch_size:
                pending.remove(item)
                batch.append(item)
                rows += len(item.x)
        deadline = loop.time() + self.max_delay_s
        while rows < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
            if item is None:
                stopping = True
                break
            if item.x.shape[1:] == shape and rows + len(item.x) <= self.max_batch_size:
                batch.append(item)
                rows += len(item.x)
            else:
                pending.append(item)
        return batch, stopping

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        pending: collections.deque = collections.deque()
        stopping = False
        while not (stopping and not pending):
            if stopping:  # drain what is left without waiting for new requests
                self._queue.put_nowait(None)
            batch, stop_now = await self._next_batch(pending)
            stopping = stopping or stop_now
            batch = [item for item in batch if not item.future.cancelled()]
            if not batch:
                continue
            x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
            started = loop.time()
            try:
                y = await loop.run_in_executor(self._executor, self.run, x)
            except Exception as e:  # the model failed: every caller of this batch gets the error
                log.exception("inference failed", extra={"fields": {"model": self.name, "batch": len(x)}})
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            if self.on_batch:
                self.on_batch(len(x), loop.time() - started)
            start = 0
            for item in batch:
                n = len(item.x)
                if not item.future.done():
                    item.future.set_result(y[start:start + n])
                start += n
        while not self._queue.empty():  # arrived after stop(): refuse rather than hang
            item = self._queue.get_nowait()
            if item is not None and not item.future.done():
                item.future.set_exception(RuntimeError(f"batcher {self.name} stopped"))
