"""Batches of work prepared one batch ahead by a thread pool: the one prefetcher that the
scorer (preprocessing images for the vision tower) and the command line (decoding files)
share."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["batched", "prefetched", "flat"]

T = TypeVar("T")
R = TypeVar("R")


def batched(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` cut into consecutive batches of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _submit(
    pool: ThreadPoolExecutor, work: Callable[[Sequence[T]], R], batch: Sequence[T], workers: int
) -> list[Future]:
    step = -(-len(batch) // workers)
    return [pool.submit(work, batch[i : i + step]) for i in range(0, len(batch), step)]


def prefetched(
    batches: Sequence[Sequence[T]], work: Callable[[Sequence[T]], R], workers: int
) -> Iterator[tuple[Sequence[T], list[R]]]:
    """Each batch with ``work``'s results on its slices (up to ``workers`` slices, run
    concurrently), the next batch's work running while the caller uses the current one.

    Threads run ``work``: what is per thread (torch's grad mode) must be set inside it.
    """
    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = _submit(pool, work, batches[0], workers) if batches else []
        for k, batch in enumerate(batches):
            results = [job.result() for job in pending]
            if k + 1 < len(batches):
                pending = _submit(pool, work, batches[k + 1], workers)
            yield batch, results


def flat(results: list[list[Any]]) -> list[Any]:
    """The items of per-slice result lists, in order."""
    return [item for part in results for item in part]
