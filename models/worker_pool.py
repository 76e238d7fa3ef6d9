"""Spawned worker processes that each load one model once: what `models/asr_pool.py` (Whisper) and
`models/tts_pool.py` (Piper) run on.

A worker that dies (killed, out of memory) breaks the whole pool: it is started again once and the job retried,
so one lost process costs a model load, not every later call's recognition or speech. Each job's CPU time is
measured in the worker and added up here (the bench counts it as the server's).
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from models.blas import one_blas_thread

log = logging.getLogger(__name__)

T = TypeVar("T")


def _init_worker(initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    one_blas_thread()  # before the model loads: its first matrix product would start the spinning helper
    initializer(*initargs)


def _timed(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[T, float]:
    cpu0 = time.process_time()
    result = fn(*args, **kwargs)
    return result, time.process_time() - cpu0


class WorkerProcesses:
    """`processes` spawned workers set up by `initializer(*initargs)`; `ready` is run once in each before the
    constructor returns, so the first caller never waits for a model load. `run` blocks (call it from a thread)."""

    def __init__(
        self,
        processes: int,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...],
        ready: Callable[[], object],
        *,
        name: str,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self.name = name
        self._initializer = initializer
        self._initargs = initargs
        self._ready = ready
        self._lock = threading.Lock()
        self._cpu_s = 0.0
        self.restarts = 0
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        # Spawned, not forked: the parent may already hold model and loop threads that a fork would copy broken.
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._initializer, self._initargs),
        )
        for ready in [pool.submit(self._ready) for _ in range(self.processes)]:
            ready.result()
        return pool

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in a worker (module-level `fn`, picklable arguments)."""
        pool = self._pool
        try:
            result, cpu_s = pool.submit(_timed, fn, args, kwargs).result()
        except concurrent.futures.process.BrokenProcessPool:
            log.error("a %s worker process died; starting the pool again", self.name)
            with self._lock:
                if self._pool is pool:  # one restart, however many threads saw the same broken pool
                    self._pool = self._start()
                    self.restarts += 1
            result, cpu_s = self._pool.submit(_timed, fn, args, kwargs).result()
        with self._lock:
            self._cpu_s += cpu_s
        return result

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (tests kill one)."""
        return list(self._pool._processes)

    def take_cpu_s(self) -> float:
        """CPU seconds the workers spent on jobs since the last call."""
        with self._lock:
            spent, self._cpu_s = self._cpu_s, 0.0
        return spent

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
