"""Dynamic batching: same-shape requests share a call, up to the size limit; results go back to
their callers; other shapes wait their turn; a failing call fails only its own batch."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from serving.batching import DynamicBatcher


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_batched_by_shape_and_answered_in_order():
    calls = []

    def model(x):
        calls.append(x.shape)
        time.sleep(0.02)            # a call takes a while, so requests pile up behind it
        return x * 2 + 1

    async def scenario():
        batcher = DynamicBatcher(model, max_batch_size=4, max_delay_s=0.05)
        batcher.start()
        rng = np.random.default_rng(0)
        inputs = [rng.random((1 + i % 2, 3, 8 + 4 * (i % 3), 8), dtype=np.float32) for i in range(12)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.stop()
        return inputs, outputs

    inputs, outputs = run(scenario())
    for x, y in zip(inputs, outputs):
        assert np.array_equal(y, x * 2 + 1)
    assert sum(shape[0] for shape in calls) == sum(len(x) for x in inputs)
    assert all(shape[0] <= 4 for shape in calls)
    assert len(calls) < len(inputs), "nothing was batched"
    assert len({shape[1:] for shape in calls}) == 3   # three image sizes, never mixed in one call


def test_a_lone_request_waits_at_most_the_delay():
    async def scenario():
        batcher = DynamicBatcher(lambda x: x, max_batch_size=8, max_delay_s=0.05)
        batcher.start()
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 3, 8, 8), np.float32))
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    assert run(scenario()) < 1.0


def test_a_failing_call_fails_its_batch_and_the_batcher_goes_on():
    def model(x):
        if (x < 0).any():
            raise ValueError("bad batch")
        return x

    async def scenario():
        batcher = DynamicBatcher(model, max_batch_size=2, max_delay_s=0.0)
        batcher.start()
        with pytest.raises(ValueError, match="bad batch"):
            await batcher.submit(-np.ones((1, 3, 8, 8), np.float32))
        good = await batcher.submit(np.ones((1, 3, 8, 8), np.float32))
        await batcher.stop()
        return good

    assert run(scenario()).sum() == 192


def test_stop_finishes_queued_requests():
    def model(x):
        time.sleep(0.01)
        return x

    async def scenario():
        batcher = DynamicBatcher(model, max_batch_size=1, max_delay_s=0.0)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(np.full((1, 1, 8, 8), i, np.float32))) for i in range(5)]
        await asyncio.sleep(0)      # all five are queued
        await batcher.stop()
        return [t.result()[0, 0, 0, 0] for t in tasks]

    assert run(scenario()) == [0, 1, 2, 3, 4]
