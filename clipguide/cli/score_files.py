"""Files of ``clipguide score``: the images and prompts it reads, and the result file it
writes, replaced whole (temp file + rename) with a journal of the rows scored since, so a
killed run loses at most the batch in flight and ``--resume`` continues without duplicates."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clipguide.cli.files import atomic_open

__all__ = [
    "IMAGE_EXTENSIONS",
    "expand_paths",
    "path_key",
    "read_prompt_file",
    "output_format",
    "journal_of",
    "read_rows",
    "ResultWriter",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# -- inputs ----------------------------------------------------------------------------------
def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded (recursively, sorted) to their image files."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            out.extend(sorted(p for p in found if p.is_file()))
        else:
            out.append(path)  # missing files are reported per row, not fatal
    return out


def path_key(path: str | Path) -> str:
    """The absolute path a file is known by (the same file named twice is one)."""
    return os.path.abspath(os.fspath(path))


def read_prompt_file(file: str | Path) -> dict[str, str]:
    """Map absolute image path -> prompt from a CSV (path,prompt columns) or JSONL file."""
    file = Path(file)
    base = file.parent
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise ValueError(f"--prompts {file} {what}; expected a CSV or JSONL file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"--prompts {file} is not UTF-8 text ({err}); expected CSV or JSONL"
        ) from None
    is_jsonl = file.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip()[:1] == "{"
    records: list[dict[str, Any]] = []
    if is_jsonl:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"--prompts {file}: line {number} is not JSON: {err}"
                    ) from None
    else:
        records = list(csv.DictReader(text.splitlines()))
    mapping: dict[str, str] = {}
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or "path" not in record or "prompt" not in record:
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"--prompts {file}: record {number} needs 'path' and 'prompt' fields, got {got}"
            )
        mapping[path_key(base / str(record["path"]))] = str(record["prompt"])
    if not mapping:
        raise ValueError(f"--prompts {file}: no records found")
    return mapping


# -- output ----------------------------------------------------------------------------------
def output_format(out: Path, fmt: str | None) -> str:
    """``--format``, or the format ``--out``'s suffix names."""
    if fmt:
        return fmt
    if out.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if out.suffix.lower() in (".csv", ".tsv", ""):
        return "csv"
    raise ValueError(
        f"--out {out}: cannot tell the format from {out.suffix!r} (.csv, .tsv, .jsonl, .ndjson, "
        f".json); pass --format csv|jsonl"
    )


def journal_of(out: Path) -> Path:
    """The journal of rows scored since ``out`` was last replaced."""
    return out.with_name(out.name + ".journal.jsonl")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill: that row is scored again
            continue
    return rows


def read_rows(out: Path, fmt: str) -> list[dict[str, Any]]:
    """Rows already in ``out`` and its journal, first occurrence of each path kept."""
    rows: list[dict[str, Any]] = []
    if out.exists():
        if fmt == "jsonl":
            rows = _read_jsonl(out)
        else:
            with out.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
    if journal_of(out).exists():
        rows += _read_jsonl(journal_of(out))
    seen: set[str] = set()
    unique = []
    for row in rows:
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(
                f"--out {out}: a row without a 'path' ({str(row)[:80]}): not a score file to "
                "resume; pass --overwrite to replace it"
            )
        key = path_key(row["path"])
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _write_rows(out: Path, fmt: str, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    """Replace ``out`` whole with ``rows`` (clipguide.cli.files.atomic_open)."""
    with atomic_open(out, "w", newline="", encoding="utf-8") as handle:
        if fmt == "jsonl":
            handle.writelines(json.dumps(row, allow_nan=False) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)


class ResultWriter:
    """Journal each batch durably; replace the output whole every ``checkpoint_s`` seconds."""

    def __init__(
        self, out: Path, fmt: str, rows: list[dict], fields: tuple[str, ...], checkpoint_s: float
    ):
        self.out, self.fmt, self.fields, self.checkpoint_s = out, fmt, fields, checkpoint_s
        self.rows = list(rows)
        self.last = time.monotonic()
        out.parent.mkdir(parents=True, exist_ok=True)
        self.journal = journal_of(out).open("a", encoding="utf-8")

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        self.journal.write("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
        self.journal.flush()
        os.fsync(self.journal.fileno())
        if time.monotonic() - self.last >= self.checkpoint_s:
            self.checkpoint()

    def checkpoint(self) -> None:
        _write_rows(self.out, self.fmt, self.rows, self.fields)
        self.journal.truncate(0)  # rows now live in the output (duplicates are dropped on read)
        self.last = time.monotonic()

    def close(self) -> None:
        self.checkpoint()
        self.journal.close()
        journal_of(self.out).unlink(missing_ok=True)
