"""The job queue on its own: lanes per model, order, cancellation, what is kept."""

from __future__ import annotations

import threading
import time

import pytest

from lightsr.serve.errors import ServeError
from lightsr.serve.jobs import CANCELLED, DONE, FINISHED, RUNNING, Job, JobQueue

WAIT_S = 10.0


def job(model: str = "m") -> Job:
    return Job(model, 4, "png", "a.png", (8, 8), b"data", time_limit=60.0)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_each_model_has_its_own_lane_and_order():
    gate = threading.Event()
    order: list[str] = []

    def runner(job: Job, progress) -> tuple[bytes, tuple[int, int]]:
        if job.model == "slow":
            gate.wait(WAIT_S)
        order.append(job.id)
        return b"out", (32, 32)

    queue = JobQueue(runner, ["slow", "fast"])
    try:
        first, second, third = (queue.submit(job("slow")) for _ in range(3))
        fast = queue.submit(job("fast"))
        # The fast model does not wait for the slow one.
        wait_until(lambda: fast.state == DONE, "the fast job")
        assert first.state == RUNNING
        assert (queue.position(second), queue.position(third)) == (1, 2)
        assert queue.stats() == {"waiting": 2, "running": 1, "kept": 4}
        gate.set()
        wait_until(lambda: third.state in FINISHED, "the slow jobs")
        assert order == [fast.id, first.id, second.id, third.id]
        assert first.result == b"out" and first.data is None  # the upload is not kept
    finally:
        gate.set()
        queue.close()


def test_cancel_waiting_and_running_jobs():
    started = threading.Event()

    def runner(job: Job, progress) -> tuple[bytes, tuple[int, int]]:
        started.set()
        for tile in range(1000):
            progress(tile + 1, 1000)
            time.sleep(0.01)
        return b"out", (1, 1)

    queue = JobQueue(runner, ["m"])
    try:
        running, waiting = queue.submit(job()), queue.submit(job())
        started.wait(WAIT_S)
        queue.cancel(waiting)
        assert waiting.state == CANCELLED and waiting.error.status == 409
        queue.cancel(running)
        wait_until(lambda: running.state in FINISHED, "the running job to stop")
        assert running.state == CANCELLED and running.tiles_done < 1000
    finally:
        queue.close()


def test_results_beyond_the_byte_budget_are_forgotten_oldest_first():
    queue = JobQueue(lambda job, progress: (b"x" * 100, (1, 1)), ["m"], keep_bytes=250)
    try:
        jobs = [queue.submit(job()) for _ in range(4)]
        wait_until(lambda: all(j.state == DONE for j in jobs), "the jobs")
        queue.submit(job())  # forgetting happens as the queue is used
        with pytest.raises(ServeError) as error:
            queue.get(jobs[0].id)
        assert error.value.status == 404
        assert queue.get(jobs[-1].id) is jobs[-1]
    finally:
        queue.close()


def test_full_queue_refuses_with_retry_after():
    gate = threading.Event()

    def runner(job: Job, progress) -> tuple[bytes, tuple[int, int]]:
        gate.wait(WAIT_S)
        return b"", (1, 1)

    queue = JobQueue(runner, ["m"], max_waiting=1)
    try:
        queue.submit(job())
        wait_until(lambda: queue.stats()["running"] == 1, "the first job to start")
        queue.submit(job())
        with pytest.raises(ServeError) as error:
            queue.submit(job())
        assert (error.value.status, error.value.code) == (503, "queue_full")
        assert error.value.headers == {"Retry-After": "5"}
    finally:
        gate.set()
        queue.close()
