"""Measure several models at once on CPU: copies of one model in memory, each driven by its own
thread.

One forward on a few CPU cores leaves them idle part of the time (Python between operators,
small elementwise operators, OpenMP fork and join), and a second forward running at the same
time fills those gaps. On the demo (2 cores, bf16 sweep points) two at a time took 4.6 s per
point instead of 6.4 s, with bit-identical losses; three and four at a time took 5.1 and 5.5 s
per point. On accelerators kernels already fill the device: one at a time.

Jobs share nothing mutable but what the caller makes safe: inputs are tokenized before the jobs
start (a fast tokenizer may not be called from several threads), and a GramSet locks its cache."""
from __future__ import annotations

import copy
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Literal, TypeVar

from tqdm.auto import tqdm

from cusprun.system import available_memory, cpu_cores  # noqa: F401 - re-exported

Workers = int | Literal["auto"]
S = TypeVar("S")
J = TypeVar("J")
R = TypeVar("R")

AUTO_WORKERS = 2          # the measured best on 2 cores (above)
MEMORY_SHARE = 0.25       # 'auto' makes copies only while they fit in this share of free memory


def resolve_workers(workers: Workers, model) -> int:
    """How many models to measure at once: an explicit count as given; 'auto' two on a CPU with
    at least two cores when one more copy of `model` fits in a quarter of the free memory, else
    one."""
    if workers == "auto":
        from cusprun.models.loading import input_device

        if input_device(model).type != "cpu" or cpu_cores() < 2:
            return 1
        free = available_memory()
        extra = model.get_memory_footprint() * (AUTO_WORKERS - 1)   # parameters and buffers
        return AUTO_WORKERS if free is not None and extra <= MEMORY_SHARE * free else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: give 'auto' or a whole number >= 1")
    return workers


def replicate(model, n: int) -> list:
    """`model` and n - 1 independent copies of it."""
    return [model] + [copy.deepcopy(model) for _ in range(n - 1)]


def run_jobs(states: Sequence[S], jobs: Sequence[J], fn: Callable[[S, J], R], *, desc: str = "",
             progress: bool = True) -> list[R]:
    """fn(state, job) for every job, len(states) at a time; each state (a model copy and what
    goes with it) serves one job at a time. Results in job order; the first error is raised."""
    if len(states) <= 1:
        return [fn(states[0], j) for j in tqdm(jobs, desc=desc, disable=not progress)]
    free: queue.SimpleQueue = queue.SimpleQueue()
    for s in states:
        free.put(s)

    def one(job: J) -> R:
        state = free.get()
        try:
            return fn(state, job)
        finally:
            free.put(state)

    with ThreadPoolExecutor(max_workers=len(states), thread_name_prefix="cusprun-measure") as ex:
        futures = {ex.submit(one, j): i for i, j in enumerate(jobs)}
        out: list = [None] * len(jobs)
        try:
            for f in tqdm(as_completed(futures), total=len(jobs), desc=desc, disable=not progress):
                out[futures[f]] = f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return out
