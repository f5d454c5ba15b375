"""A scoring job's output folder: one Parquet part per shard, written whole and atomically
(``clipguide.cli.files.atomic_open``) when its last row arrives, and ``_job.json`` naming the job.

Resume is idempotent per shard: a part on disk is a finished shard, so a rerun scores only the
shards without a part; a part is never appended to or rewritten, so nothing is duplicated, and
the job's fingerprint (items, shard size, judge and scale) must match, so a different job is
never mixed in: a resume with another judge or scale is refused naming the setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from clipguide.cli.files import remove_stale_temps, write_atomic
from clipguide.cli.score_settings import as_argument, changed_setting
from clipguide.distributed.sources import WorkItem, fingerprint

__all__ = [
    "COLUMNS",
    "JOB_FILE",
    "part_path",
    "done_shards",
    "prepare_output",
    "write_parts",
    "count_rows",
    "read_output",
]

COLUMNS = ("path", "prompt", "cosine", "clipscore", "error")  # as ``clipguide score`` writes
JOB_FILE = "_job.json"
_PART = "part-{:06d}.parquet"


def part_path(out: Path, shard: int) -> Path:
    return Path(out) / _PART.format(shard)


def done_shards(out: Path) -> set[int]:
    """Shards whose part is on disk (temporary files of killed writers are not parts)."""
    out = Path(out)
    if not out.is_dir():
        return set()
    found = set()
    for p in out.glob("part-*.parquet"):
        number = p.name[len("part-") : -len(".parquet")]
        if number.isdigit():
            found.add(int(number))
    return found


def prepare_output(
    out: Path,
    items: list[WorkItem],
    shard_size: int,
    resume: bool,
    overwrite: bool,
    name: str = "out",
    check_only: bool = False,
    *,
    settings: dict[str, Any] | None = None,
    shown: Callable[[str, Any], str] = as_argument,
) -> set[int]:
    """Check ``out`` (the argument ``name``) for this job, then (unless ``check_only``) clear
    it if ``overwrite`` and write its ``_job.json``; the shards already done.

    ``settings`` (:func:`~clipguide.cli.score_settings.judge_settings`) must be those of the
    job resumed; a refusal names the first that differs as ``shown`` writes it.
    """
    out = Path(out)
    if not items:
        raise ValueError("items is empty: nothing to score (no images, or an empty manifest)")
    if resume and overwrite:
        raise ValueError("resume and overwrite contradict each other; pass one of them")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{name} {out} is a file; the Ray engine writes a folder of Parquet parts")
    job = {"fingerprint": fingerprint(items, shard_size, settings), "items": len(items)}
    job.update(shard_size=shard_size, shards=items[-1]["shard"] + 1, settings=settings)
    job_file = out / JOB_FILE
    ours = done_shards(out) or job_file.exists()
    if ours and not (resume or overwrite):
        raise ValueError(
            f"{name} {out} holds a scoring job; pass resume=True (--resume) to continue it or "
            "overwrite=True (--overwrite) to replace it"
        )
    if ours and resume:
        _check_same_job(out, job, name, shown)
    if check_only:
        return set() if overwrite else done_shards(out)
    if ours and overwrite:
        for shard in done_shards(out):
            part_path(out, shard).unlink()
        job_file.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(job_file, json.dumps(job, indent=2) + "\n")
    return done_shards(out)


def _check_same_job(out: Path, job: dict, name: str, shown: Callable[[str, Any], str]) -> None:
    try:
        old = json.loads((out / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{name} {out}: cannot read {JOB_FILE} to resume ({err})") from None
    if not isinstance(old, dict):
        raise ValueError(f"{name} {out}: {JOB_FILE} is not a job's record; pass --overwrite")
    change = changed_setting(old.get("settings") or {}, job["settings"] or {}, shown)
    if change is not None:
        raise ValueError(
            f"{name} {out} was scored with {change}; resume with the same settings, or pass "
            "overwrite=True (--overwrite) or another folder"
        )
    if old.get("fingerprint") != job["fingerprint"]:
        raise ValueError(
            f"{name} {out} holds another job ({old.get('items')} items in shards of "
            f"{old.get('shard_size')}; this one: {job['items']} in shards of "
            f"{job['shard_size']}, or other paths/prompts); pass overwrite=True (--overwrite) or "
            "another folder"
        )


def _table(rows: list[Any]) -> Any:
    """The rows of one shard as an Arrow table in input order, with the CLI's columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = pa.schema(
        [("path", pa.string()), ("prompt", pa.string()), ("index", pa.int64())]
        + [("cosine", pa.float64()), ("clipscore", pa.float64()), ("error", pa.string())]
    )  # a batch whose prompts are all missing arrives typed null: cast, then concatenate
    table = pa.concat_tables([t.select(schema.names).cast(schema) for t in rows]).sort_by("index")
    columns = []
    for name in COLUMNS:
        column = table[name]
        if name in ("cosine", "clipscore"):  # NaN means "no score": null, as the CLI's None
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, pa.float64()), column)
        columns.append(column)
    return pa.table(columns, names=list(COLUMNS))


def _write_part(out: Path, shard: int, table: Any) -> Path:
    import pyarrow.parquet as pq

    from clipguide.cli.files import atomic_open

    path = part_path(out, shard)
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle)
    return path


def write_parts(
    batches: Iterable[Any],
    out: Path,
    expected: dict[int, int],
    on_part: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write each shard's part once all its ``expected[shard]`` rows have arrived.

    ``batches`` are Arrow tables with an ``index`` and a ``shard`` column (in any order and
    interleaving, as Ray streams them). A row that does not belong, or a shard left
    incomplete, raises: rows are never silently dropped or duplicated.
    """
    import pyarrow.compute as pc

    pending: dict[int, list[Any]] = {}
    counts: dict[int, int] = {}
    written = []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        for shard in pc.unique(batch["shard"]).to_pylist():
            if shard not in expected:
                raise RuntimeError(f"a row of shard {shard}, which this run does not score")
            part = batch.filter(pc.equal(batch["shard"], shard))
            pending.setdefault(shard, []).append(part)
            counts[shard] = counts.get(shard, 0) + part.num_rows
            if counts[shard] > expected[shard]:
                raise RuntimeError(f"shard {shard}: more rows than its {expected[shard]} items")
            if counts[shard] == expected[shard]:
                remove_stale_temps(part_path(out, shard))
                written.append(_write_part(out, shard, _table(pending.pop(shard))))
                if on_part is not None:
                    on_part(written[-1])
    missing = sorted(s for s in expected if counts.get(s, 0) < expected[s])
    if missing:
        raise RuntimeError(f"shards {missing[:10]} did not receive all their rows")
    return written


def count_rows(out: str | os.PathLike) -> dict[str, int]:
    """How many rows, and error rows, the parts in ``out`` hold (reads one column)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = errors = 0
    for shard in sorted(done_shards(Path(out))):
        column = pq.read_table(part_path(Path(out), shard), columns=["error"])["error"]
        rows += len(column)
        errors += int(pc.sum(pc.not_equal(pc.fill_null(column, ""), "")).as_py() or 0)
    return {"rows": rows, "errors": errors}


def read_output(out: str | os.PathLike) -> Any:
    """Every part of ``out`` as one Arrow table (in shard order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [pq.read_table(part_path(Path(out), s)) for s in sorted(done_shards(Path(out)))]
    if not parts:
        raise ValueError(f"out {out} holds no parts")
    return pa.concat_tables(parts)
