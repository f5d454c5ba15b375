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
    "is_uri",
    "display_path",
    "path_key",
    "row_key",
    "read_records",
    "manifest_pairs",
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


def is_uri(path: str) -> bool:
    """Whether ``path`` names an object in a filesystem other than the local one."""
    return "://" in path and not path.startswith("file://")


def display_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as written in a result row: as is when it is valid text; a name that is not
    UTF-8 (bytes ``caf\\xe9.png`` on Linux) gets each byte that is not as ``\\xNN``."""
    text = os.fsdecode(os.fspath(path))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogates standing for the bytes that are not UTF-8
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def path_key(path: str | Path) -> str:
    """The absolute path a file is known by (the same file named twice is one), as written
    in a result row (:func:`display_path`)."""
    return display_path(os.path.abspath(os.fspath(path)))


def row_key(path: str | Path, prompt: str | None) -> tuple[str, str | None]:
    """What a result row stands for: the image and its prompt (no prompt: None, also "")."""
    return path_key(path), (prompt or None)


def read_records(file: Path, what: str) -> list[Any]:
    """The records of a CSV (a byte-order mark allowed, as Excel writes it), JSON Lines or
    JSON (an array of records, or one record) manifest; ``what`` names it in errors."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} is not UTF-8 text ({err}); expected CSV or JSONL") from None
    start = text.lstrip()[:1]
    if file.suffix.lower() not in (".jsonl", ".ndjson", ".json") and start != "{":
        return list(csv.DictReader(text.splitlines()))
    if file.suffix.lower() == ".json" and start == "[":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} is not a JSON array of records: {err}") from None
        return records
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{what}: line {number} is not JSON: {err}") from None
    return records


def manifest_pairs(records: list[Any], base: Path, what: str) -> list[tuple[str, str | None]]:
    """(absolute path or URI, prompt) per record, each pair once; paths relative to ``base``.
    A record without a prompt gives None (an error row); a manifest without any is refused."""
    if not records:
        raise ValueError(f"{what}: no records found")
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or "path" not in record:
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{what}: record {number} needs 'path' and 'prompt' fields, got {got}")
    if not any("prompt" in record for record in records):
        raise ValueError(
            f"{what}: no 'prompt' field in any record (each needs 'path' and 'prompt'), "
            f"got {sorted(records[0])}"
        )
    pairs: dict[tuple[str, str | None], None] = {}
    for record in records:
        path, prompt = str(record["path"]), record.get("prompt")
        if not is_uri(path):
            path = os.path.abspath(base / path.removeprefix("file://"))
        pairs[(path, None if prompt is None or prompt == "" else str(prompt))] = None
    return list(pairs)


def read_prompt_file(file: str | Path) -> list[tuple[str, str | None]]:
    """(absolute image path, prompt) pairs, in file order, from a CSV (path,prompt columns),
    JSON Lines or JSON array file: an image with several prompts gives a pair for each."""
    file = Path(file)
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise ValueError(f"--prompts {file} {what}; expected a CSV or JSONL file")
    return manifest_pairs(read_records(file, f"--prompts {file}"), file.parent, f"--prompts {file}")


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
    """Rows already in ``out`` and its journal, first occurrence of each (path, prompt) kept."""
    rows: list[dict[str, Any]] = []
    if out.exists():
        if fmt == "jsonl":
            rows = _read_jsonl(out)
        else:
            with out.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
    if journal_of(out).exists():
        rows += _read_jsonl(journal_of(out))
    seen: set[tuple[str, str | None]] = set()
    unique = []
    for row in rows:
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(
                f"--out {out}: a row without a 'path' ({str(row)[:80]}): not a score file to "
                "resume; pass --overwrite to replace it"
            )
        key = row_key(row["path"], row.get("prompt"))
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
