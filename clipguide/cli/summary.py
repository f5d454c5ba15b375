"""What ``clipguide generate`` tells about each image it writes: one summary line and, for
best-of-N, a contact sheet of the candidates with their ranks next to the chosen image."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

from clipguide.cli.files import write_atomic
from clipguide.cli.models import NamedModel

__all__ = ["say", "plural", "sheet_path", "summary_line", "write_sheet"]


def say(line: str) -> None:
    """Print one summary line on stdout in one ``write`` and flush it: processes that share
    a pipe (``torchrun``'s workers) then never split or hold back each other's lines."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def plural(count: int, word: str) -> str:
    """``"1 row"``, ``"2 rows"``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def sheet_path(image_path: Path) -> Path:
    """Where the candidates' sheet of ``image_path`` goes: beside it, as JPEG, so that
    ``out/*.png`` still names only the chosen images."""
    return image_path.with_name(f"{image_path.stem}.candidates.jpg")


def _verdict(extra: dict) -> str | None:
    oracle = extra.get("oracle") if isinstance(extra, dict) else None
    if not isinstance(oracle, dict) or "ok" not in oracle:
        return None
    if oracle["ok"]:
        return "correct"
    failed = [r["what"] for r in oracle.get("requirements", []) if not r.get("ok")]
    return "wrong" + (f" (fails: {', '.join(failed)})" if failed else "")


def write_sheet(image_path: Path, candidates: list[Any], record: dict, model: NamedModel) -> Path:
    """The candidates, best first, captioned with rank, selection score and (where the model
    annotates images with an oracle) its verdict; returns the sheet's path."""
    from clipguide.scoring.sheet import contact_sheet

    picks = record["best_of"]
    text = record.get("plain_prompt") or record["prompt"]  # what the CLIPs and oracle read
    extras = model.annotate(candidates, text) if model.annotate else []
    captions = []
    for k, score in enumerate(picks["candidate_scores"]):
        verdict = _verdict(extras[k]) if k < len(extras) else None
        shown = "nan" if score is None else f"{score:.1f}"
        captions.append(f"#{k + 1} {shown}" + (f" {verdict.split(' ')[0]}" if verdict else ""))
    laid = picks.get("candidate_layouts") or [None] * len(candidates)
    boxes = [None if lay is None else [r["box"] for r in lay["regions"]] for lay in laid]
    sheet = contact_sheet(candidates, captions, thumb=192, columns=len(candidates), boxes=boxes)
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=90)
    path = sheet_path(image_path)
    write_atomic(path, buf.getvalue())
    return path


def summary_line(image_path: Path, record: dict, sheet: Path | None) -> str:
    """One line: the image, how it was chosen, its CLIPScores and the oracle's verdict."""
    parts = [str(image_path)]
    picks = record.get("best_of")
    if picks:
        scores = " ".join("nan" if s is None else f"{s:.1f}" for s in picks["candidate_scores"])
        parts.append(f"best of {picks['n']} by {picks.get('method', 'clipscore')} "
                     f"(scores, chosen first: {scores})")  # fmt: skip
    if record.get("scores"):
        shown = ", ".join(
            f"{name} {'null' if v is None else f'{v:.2f}'}" for name, v in record["scores"].items()
        )
        parts.append(f"CLIPScore {shown}")
    verdict = _verdict(record)
    if verdict:
        parts.append(f"oracle: {verdict}")
    if sheet is not None:
        parts.append(f"sheet: {sheet}")
    return " | ".join(parts)
