"""What a large scoring job reads: (image, prompt) work items from a folder, a glob, a list of
files or a manifest (Parquet, JSONL or CSV with ``path`` and ``prompt`` columns), in a fixed
order and cut into numbered shards, so a rerun of the same job sees the same shards.

Only the driver runs this module; it needs pyarrow for Parquet manifests alone.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clipguide.cli.score_files import (
    IMAGE_EXTENSIONS,
    display_path,
    expand_paths,
    is_uri,
    manifest_pairs,
    path_key,
    read_records,
)

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
# {"path": str, "prompt": str | None, "shard": int, "index": int, "file": bytes}
WorkItem = dict[str, Any]


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


def _records(file: Path) -> list[Any]:
    if file.suffix.lower() != ".parquet":
        return read_records(file, f"manifest {file}")
    import pyarrow.parquet as pq

    try:
        return pq.read_table(file).to_pylist()
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types
        raise ValueError(f"manifest {file} is not a Parquet file: {err}") from None


def read_manifest(file: str | os.PathLike) -> list[tuple[str, str | None]]:
    """(image path or URI, prompt) per record, each pair once; relative paths are relative to
    the manifest's folder, as ``clipguide score --prompts`` reads them (one reader for both).
    A record without a prompt gives an error row; a manifest without prompts is refused."""
    file = Path(file)
    if file.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(
            f"manifest {file}: cannot tell the format from {file.suffix!r}; accepted: "
            f"{', '.join(MANIFEST_SUFFIXES)}"
        )
    if not file.is_file():
        raise ValueError(f"manifest {file} {'is a folder' if file.is_dir() else 'does not exist'}")
    return manifest_pairs(_records(file), file.parent, f"manifest {file}")


def work_items(pairs: Iterable[tuple[str, str | None]], shard_size: int) -> list[WorkItem]:
    """Numbered work items, each (path, prompt) pair once (the first occurrence kept).

    ``path`` is what the result row says (:func:`~clipguide.cli.score_files.display_path`:
    a local name that is not UTF-8 gets ``\\xNN`` escapes), ``file`` the bytes that open it.
    """
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
    seen: set[tuple[str, str | None]] = set()
    items: list[WorkItem] = []
    for path, prompt in pairs:
        key = (path if is_uri(path) else path_key(path), prompt)
        if key in seen:
            continue
        seen.add(key)
        n = len(items)
        file = path.encode("utf-8") if is_uri(path) else os.fsencode(path.removeprefix("file://"))
        item = {"path": display_path(path), "prompt": prompt, "shard": n // shard_size, "index": n}
        items.append({**item, "file": file})
    return items


def fingerprint(
    items: Sequence[WorkItem], shard_size: int, settings: dict[str, Any] | None = None
) -> str:
    """A hash of everything that decides a job's rows: its items, shard size and ``settings``
    (the judge and scale, :func:`~clipguide.cli.score_settings.judge_settings`)."""
    digest = hashlib.sha256(f"{shard_size}\n{json.dumps(settings, sort_keys=True)}\n".encode())
    for item in items:
        digest.update(f"{item['path']}\0{item['prompt']}\n".encode())
    return digest.hexdigest()
