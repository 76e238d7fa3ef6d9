"""numpy's BLAS kept to one thread in every process that runs a model or serves calls.

OpenBLAS (numpy's) starts a helper thread per core and, after each matrix product, lets those threads spin for
about a tenth of a second waiting for the next one. Whisper's features (a mel filterbank product per utterance)
set it spinning, as can any product in the server (the intents' similarities); the spinning thread took a core
beside CTranslate2 and doubled Whisper's CPU time per utterance for the same wall time (`bench/asr_cpu.py`, the
bench's six recordings: 189-292 ms of CPU with the helper thread, 90-184 ms without, 1.84x). Our matrices are
small enough that one thread loses nothing, and on a 2-core node the core it frees is the one the other calls
are waiting for.
"""

from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits


def one_blas_thread() -> None:
    """Limits BLAS to one thread in this process from now on (safe to call again; numpy already loaded is fine)."""
    threadpool_limits(limits=1, user_api="blas")


def blas_threads() -> int:
    """The most threads any BLAS library loaded in this process will use (1 after `one_blas_thread`)."""
    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)
