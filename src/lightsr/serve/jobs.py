"""The job queue: a bounded number of upscales run at once, the rest wait in order.

Every model has its own lane of waiting jobs and its own worker threads (one by default), so
a slow model does not hold up a fast one and a model is never run by more threads than it
was given. Jobs live in memory: finished ones are kept for a while so that their results can
be fetched, within a time and byte budget.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lightsr.serve.errors import ServeError

log = logging.getLogger("lightsr.serve")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = frozenset((DONE, FAILED, CANCELLED))


@dataclass(eq=False)
class Job:
    """One upscale request and, once it has run, its result.

    ``data`` (the uploaded file) is dropped when the job starts; ``result`` is the encoded
    output image.
    """

    model: str
    scale: float
    format: str
    filename: str
    input_size: tuple[int, int]
    data: bytes | None
    time_limit: float
    quality: int | None = None
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    state: str = QUEUED
    tiles_done: int = 0
    tiles_total: int = 0
    result: bytes | None = None
    output_size: tuple[int, int] | None = None
    error: ServeError | None = None
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(
        default_factory=list, repr=False
    )

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` after which the job is abandoned."""
        return self.submitted + self.time_limit


Runner = Callable[[Job, Callable[[int, int], None]], tuple[bytes, tuple[int, int]]]


class _Stopped(Exception):
    """Raised from the progress callback to stop a job between tiles."""


class JobQueue:
    """Lanes of waiting jobs, worker threads that run them, and finished jobs kept for a while.

    Args:
        runner: ``runner(job, progress) -> (encoded image, (width, height))``; raises
            :class:`ServeError` for failures the client should see.
        lanes: one per model.
        workers_per_lane: jobs of one model that run at once.
        max_waiting: jobs that may wait in all lanes together; more are refused (503).
        keep_seconds: how long a finished job's result stays available.
        keep_bytes: results kept in all; the oldest are dropped beyond it.
    """

    def __init__(
        self,
        runner: Runner,
        lanes: Iterable[str],
        workers_per_lane: int = 1,
        max_waiting: int = 32,
        keep_seconds: float = 600.0,
        keep_bytes: int = 256 << 20,
    ) -> None:
        self._runner = runner
        self._max_waiting = max_waiting
        self._keep_seconds = keep_seconds
        self._keep_bytes = keep_bytes
        self._lock = threading.Condition()
        self._waiting: dict[str, deque[Job]] = {lane: deque() for lane in lanes}
        self._jobs: dict[str, Job] = {}  # submission order: the oldest first
        self._running = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, args=(lane,), name=f"lightsr-{lane}-{i}")
            for lane in self._waiting
            for i in range(workers_per_lane)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    # ------------------------------------------------------------------ the clients' side

    def submit(self, job: Job) -> Job:
        """Queue ``job`` in its model's lane.

        Raises:
            ServeError: 503 when the queue is full or the server is shutting down.
        """
        with self._lock:
            if self._closed:
                raise ServeError(503, "shutting_down", "the server is shutting down")
            self._expire()
            if sum(len(lane) for lane in self._waiting.values()) >= self._max_waiting:
                raise ServeError(
                    503,
                    "queue_full",
                    f"{self._max_waiting} jobs are already waiting; try again later",
                    {"Retry-After": "5"},
                )
            self._waiting[job.model].append(job)
            self._jobs[job.id] = job
            self._lock.notify_all()
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id.

        Raises:
            ServeError: 404 when there is none (never was, or forgotten).
        """
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
        if job is None:
            raise ServeError(404, "unknown_job", f"no job {job_id!r} (unknown or expired)")
        return job

    def position(self, job: Job) -> int | None:
        """1 for the next job of its lane to start, 2 after it, ...; ``None`` unless waiting."""
        with self._lock:
            if job.state != QUEUED:
                return None
            return self._waiting[job.model].index(job) + 1

    async def wait(self, job: Job) -> None:
        """Return once ``job`` has finished (done, failed or cancelled)."""
        event = asyncio.Event()
        with self._lock:
            if job.state in FINISHED:
                return
            job._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()

    def cancel(self, job: Job) -> None:
        """Cancel a waiting job at once, a running one after its current tile."""
        with self._lock:
            if job.state == QUEUED:
                self._waiting[job.model].remove(job)
                self._finish(job, CANCELLED, ServeError(409, "cancelled", "the job was cancelled"))
            elif job.state == RUNNING:
                job.cancel_requested = True

    def forget(self, job: Job) -> None:
        """Drop a finished job (its result has been handed over)."""
        with self._lock:
            self._jobs.pop(job.id, None)

    def stats(self) -> dict[str, int]:
        """Jobs waiting, running, and kept in memory."""
        with self._lock:
            waiting = sum(len(lane) for lane in self._waiting.values())
            return {"waiting": waiting, "running": self._running, "kept": len(self._jobs)}

    def close(self, timeout: float = 5.0) -> None:
        """Cancel the waiting jobs, stop the workers after their current job."""
        with self._lock:
            self._closed = True
            for lane in self._waiting.values():
                while lane:
                    stopped = ServeError(503, "shutting_down", "the server is shutting down")
                    self._finish(lane.popleft(), CANCELLED, stopped)
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    # ------------------------------------------------------------------ the workers' side

    def _work(self, lane: str) -> None:
        while (job := self._next(lane)) is not None:
            self._run(job)

    def _next(self, lane: str) -> Job | None:
        with self._lock:
            while True:
                while not self._waiting[lane] and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return None
                job = self._waiting[lane].popleft()
                if time.monotonic() < job.deadline:
                    job.state, job.started = RUNNING, time.monotonic()
                    self._running += 1
                    return job
                self._finish(job, FAILED, _timed_out(job))

    def _run(self, job: Job) -> None:
        def progress(done: int, total: int) -> None:
            job.tiles_done, job.tiles_total = done, total
            if job.cancel_requested or time.monotonic() > job.deadline:
                raise _Stopped

        state, error = DONE, None
        try:
            job.result, job.output_size = self._runner(job, progress)
        except _Stopped:
            state = CANCELLED if job.cancel_requested else FAILED
            error = (
                ServeError(409, "cancelled", "the job was cancelled")
                if job.cancel_requested
                else _timed_out(job)
            )
        except ServeError as exc:
            state, error = FAILED, exc
        except Exception:  # the server must outlive any single job
            log.exception("job %s failed", job.id)
            state = FAILED
            error = ServeError(500, "internal_error", "the upscale failed; see the server log")
        with self._lock:
            self._running -= 1
            self._finish(job, state, error)

    # ------------------------------------------------------------------ bookkeeping (locked)

    def _finish(self, job: Job, state: str, error: ServeError | None) -> None:
        job.state, job.error, job.data = state, error, None
        job.finished = time.monotonic()
        for loop, event in job._waiters:
            loop.call_soon_threadsafe(event.set)
        job._waiters.clear()

    def _expire(self) -> None:
        """Forget finished jobs past ``keep_seconds``, then the oldest beyond ``keep_bytes``."""
        now = time.monotonic()
        finished = [j for j in self._jobs.values() if j.finished is not None]
        kept = sum(len(j.result or b"") for j in finished)
        for job in finished:
            if now - job.finished > self._keep_seconds or kept > self._keep_bytes:
                kept -= len(job.result or b"")
                del self._jobs[job.id]


def _timed_out(job: Job) -> ServeError:
    return ServeError(504, "time_limit", f"the job did not finish within {job.time_limit:g} s")
