"""What a large scoring job reads: (image, prompt) work items from a folder, a glob, a list of
files or a manifest (Parquet, JSONL or CSV with ``path`` and ``prompt`` columns), in a fixed
order and cut into numbered shards, so a rerun of the same job sees the same shards.

Only the driver runs this module; it needs pyarrow for Parquet manifests alone.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clipguide.cli.score_files import IMAGE_EXTENSIONS, expand_paths

__all__ = [
    "MANIFEST_SUFFIXES",
    "WorkItem",
    "is_uri",
    "image_paths",
    "read_manifest",
    "work_items",
    "fingerprint",
]

MANIFEST_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json", ".csv")
WorkItem = dict[str, Any]  # {"path": str, "prompt": str | None, "shard": int, "index": int}


def is_uri(path: str) -> bool:
    """Whether ``path`` names an object in a filesystem other than the local one."""
    return "://" in path and not path.startswith("file://")


def image_paths(sources: Sequence[str | os.PathLike]) -> list[str]:
    """Files as given, folders expanded recursively to their image files and globs
    (``*``, ``?``, ``[``, ``**``) expanded, each sorted; a missing file stays (an error row)."""
    out: list[str] = []
    for raw in sources:
        text = os.fspath(raw)
        if any(c in text for c in "*?[") and not Path(text).exists():
            found = glob.glob(text, recursive=True)
            out.extend(sorted(p for p in found if Path(p).suffix.lower() in IMAGE_EXTENSIONS))
        elif Path(text).is_dir():  # the folder walk of ``clipguide score``
            out.extend(os.fspath(p) for p in expand_paths([text]))
        else:
            out.append(text)
    return out


def _records(file: Path) -> list[dict[str, Any]]:
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(file).to_pylist()
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types
            raise ValueError(f"manifest {file} is not a Parquet file: {err}") from None
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"manifest {file} is not UTF-8 text ({err})") from None
    if suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"manifest {file}: line {number} is not JSON: {err}") from None
    return records


def read_manifest(file: str | os.PathLike) -> list[tuple[str, str | None]]:
    """(image path or URI, prompt) per record; relative paths are relative to the manifest's
    folder, as ``clipguide score --prompts`` reads them. A missing prompt gives an error row."""
    file = Path(file)
    if file.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(
            f"manifest {file}: cannot tell the format from {file.suffix!r}; accepted: "
            f"{', '.join(MANIFEST_SUFFIXES)}"
        )
    if not file.is_file():
        raise ValueError(f"manifest {file} {'is a folder' if file.is_dir() else 'does not exist'}")
    out = []
    for number, record in enumerate(_records(file), 1):
        if not isinstance(record, dict) or "path" not in record:
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"manifest {file}: record {number} needs a 'path' field, got {got}")
        path = str(record["path"])
        if not is_uri(path):
            path = os.path.abspath(file.parent / path.removeprefix("file://"))
        prompt = record.get("prompt")
        out.append((path, None if prompt is None or prompt == "" else str(prompt)))
    if not out:
        raise ValueError(f"manifest {file}: no records found")
    return out


def work_items(pairs: Iterable[tuple[str, str | None]], shard_size: int) -> list[WorkItem]:
    """Numbered work items, each (path, prompt) pair once (the first occurrence kept)."""
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
    seen: set[tuple[str, str | None]] = set()
    items: list[WorkItem] = []
    for path, prompt in pairs:
        key = (path if is_uri(path) else os.path.abspath(path), prompt)
        if key in seen:
            continue
        seen.add(key)
        n = len(items)
        items.append({"path": path, "prompt": prompt, "shard": n // shard_size, "index": n})
    return items


def fingerprint(items: Sequence[WorkItem], shard_size: int) -> str:
    """A hash of the job's items and shard size: resuming a different job is refused."""
    digest = hashlib.sha256(f"{shard_size}\n".encode())
    for item in items:
        digest.update(f"{item['path']}\0{item['prompt']}\n".encode())
    return digest.hexdigest()
