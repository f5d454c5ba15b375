"""A whole scoring job: work items -> Ray Dataset -> Parquet parts, resumable after a kill;
and the top-k images per prompt of a scored dataset."""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clipguide.cli.score_settings import as_argument, judge_settings
from clipguide.distributed.parts import COLUMNS, count_rows, prepare_output, write_parts
from clipguide.distributed.ray_score import job_items, score_items
from clipguide.distributed.sources import WorkItem

__all__ = ["score_to_parquet", "run_job", "job_settings", "top_k_rows", "top_k_per_prompt"]


def score_to_parquet(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    prompt: str | None = None,
    shard_size: int = 1000,
    **options: Any,
) -> dict[str, int]:
    """Score ``source`` (as :func:`score_dataset`) into Parquet parts in the folder ``out``;
    ``options`` go to :func:`run_job` (``resume``, ``overwrite``, ``on_part``) and on to
    :func:`score_items` (model, workers, batch size)."""
    return run_job(job_items(source, prompt, shard_size), out, shard_size=shard_size, **options)


def run_job(
    items: list[WorkItem],
    out: str | os.PathLike,
    *,
    shard_size: int,
    resume: bool = False,
    overwrite: bool = False,
    on_part: Callable[[Path], None] | None = None,
    shown: Callable[[str, Any], str] = as_argument,
    **options: Any,
) -> dict[str, int]:
    """Score work items into one Parquet part per shard in ``out``.

    With ``resume`` the shards whose part exists are skipped (the job must be the same:
    items, ``shard_size``, judge and scale; a refusal names the setting as ``shown`` writes
    it); ``overwrite`` replaces an earlier job's parts. ``on_part`` is called with each
    part's path once it is on disk. Returns counts: items, shards, shards skipped, parts
    written, and the rows and error rows in ``out``.
    """
    out = Path(out)
    settings = job_settings(options)
    check = dict(settings=settings, shown=shown)
    done = prepare_output(out, items, shard_size, resume, overwrite, check_only=True, **check)
    todo = [item for item in items if item["shard"] not in done]
    ds = score_items(todo, **options) if todo else None  # options checked: nothing written yet
    prepare_output(out, items, shard_size, resume, overwrite, **check)
    written: list[Path] = []
    if ds is not None:
        batches = ds.iter_batches(batch_format="pyarrow", batch_size=None)
        try:
            expected = dict(Counter(i["shard"] for i in todo))
            written = write_parts(batches, out, expected, on_part)
        finally:  # stop the pipeline now, so a retry in this process finds its CPUs free
            close = getattr(batches, "close", None)
            if callable(close):
                close()
    shards = items[-1]["shard"] + 1
    summary = {"items": len(items), "shards": shards, "skipped": len(done)}
    return {**summary, "written": len(written), **count_rows(out)}


def job_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The settings of :func:`score_items`'s ``options`` that decide a row's numbers."""
    scale = options.get("scale", 100.0)
    return judge_settings(
        options.get("model"), options.get("pretrained"), options.get("dtype"), scale
    )


def top_k_rows(table: Any, k: int) -> Any:
    """The ``k`` best-scored rows of each prompt in an Arrow table or pandas DataFrame of
    scored rows (error rows left out); best first, ties broken by path."""
    import pandas as pd

    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    frame = table if isinstance(table, pd.DataFrame) else table.to_pandas()
    ok = frame[frame["error"].fillna("").eq("") & frame["clipscore"].notna()]
    ordered = ok.sort_values(["prompt", "clipscore", "path"], ascending=[True, False, True])
    return ordered.groupby("prompt", sort=True).head(k).reset_index(drop=True)


def top_k_per_prompt(dataset: Any, k: int, num_partitions: int | None = None) -> Any:
    """The top ``k`` rows per prompt of a scored Ray Dataset: each block keeps its own top
    ``k`` per prompt first, so the groupby shuffles at most ``k`` rows per prompt and block.
    ``num_partitions``: the groupby's (default: Ray Data's)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    best = functools.partial(top_k_rows, k=k)
    return (
        dataset.select_columns(list(COLUMNS))
        .map_batches(best, batch_format="pandas", batch_size=None)
        .groupby("prompt", num_partitions=num_partitions)
        .map_groups(best, batch_format="pandas")
    )
