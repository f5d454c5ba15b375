"""``clipguide generate`` over 2 CPU processes (torchrun; accelerate's split_between_processes)
writes the files one process writes, under a hard timeout; and the share arithmetic.

The processes' printed lines are read per process (torchrun ``--redirects``: each worker's
stdout to its own file): lines of two processes on one pipe can interleave, so a shared
stream says nothing reliable about which process drew what."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from clipguide.cli import main
from clipguide.distributed.processes import share_of_images

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle"
# --best-of 1: plain samples, so equal pixels mean equal files (best-of's seeds: the unit test)
OPTIONS = ["--num-images", "5", "--steps", "3", "--size", "32", "--seed", "11", "--best-of", "1"]
OPTIONS += ["--no-progress"]


def test_two_processes_write_what_one_process_writes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["generate", PROMPT, "--out", str(one), *OPTIONS]) == 0
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["OMP_NUM_THREADS"] = "1"
    logs = tmp_path / "logs"  # --redirects 1: each worker's stdout in logs/.../RANK/stdout.log
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "--redirects", "1"]
    command += ["--log-dir", str(logs), "-m", "clipguide"]
    run = subprocess.run(
        [*command, "generate", PROMPT, "--out", str(two), *OPTIONS],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip  (a hang guard: a loaded 2-core machine needs minutes)
    assert run.returncode == 0, run.stderr[-3000:]
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 5 and sorted(n for n in names if n.endswith(".json")) == sorted(
        n.replace(".png", ".json") for n in pngs
    )
    # one printed line per image, starting with its path: each image drawn once, by one process
    per_process = {
        log.parent.name: [Path(line.split()[0]).name for line in log.read_text().splitlines()]
        for log in logs.rglob("stdout.log")
    }
    assert sorted(per_process) == ["0", "1"], per_process
    assert sorted(per_process["0"] + per_process["1"]) == pngs
    assert per_process["0"] == pngs[:3] and per_process["1"] == pngs[3:]  # shares of 3 and 2
    for name in [n for n in names if n.endswith((".json", ".png"))]:
        if name.endswith(".json"):
            a, b = (json.loads((d / name).read_text()) for d in (one, two))
            scores_a, scores_b = a.pop("scores"), b.pop("scores")
            assert a == b  # seed, steps, size, file, oracle verdict...
            for judge, value in scores_a.items():
                assert abs(value - scores_b[judge]) <= 1e-3
            continue
        a, b = (np.asarray(Image.open(d / name), dtype=np.int16) for d in (one, two))
        # the UNet runs batches of 5 in one process, of 3 and 2 in two: float sums in another
        # order can move a pixel by one level in 255, rarely
        assert np.abs(a - b).max() <= 1, name
        assert (a != b).mean() <= 0.01, name


class _Stdout(io.StringIO):
    """A stdout that records each ``write`` and where ``flush`` was called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)

    def flush(self) -> None:
        self.calls.append("<flush>")
        super().flush()


def test_each_printed_line_is_one_write_then_a_flush(tmp_path: Path, monkeypatch) -> None:
    """A line written in one ``write`` and flushed reaches a shared pipe whole and at once
    (``print`` writes the text and its newline separately and holds both in a buffer)."""
    stdout = _Stdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    argv = ["generate", PROMPT, "--out", str(tmp_path / "gen"), "--num-images", "2"]
    assert main([*argv, "--steps", "1", "--size", "32", "--no-progress"]) == 0
    argv = ["score", str(tmp_path / "gen"), "--prompt", PROMPT, "--out", str(tmp_path / "s.csv")]
    assert main([*argv, "--model", "shapes", "--no-progress"]) == 0
    lines = [c for c in stdout.calls if c != "<flush>"]
    assert len(lines) == 3 and all(c.endswith("\n") and c.count("\n") == 1 for c in lines)
    assert stdout.calls == [c for line in lines for c in (line, "<flush>")], stdout.calls


class _State:
    """accelerate's PartialState as far as share_of_images uses it, for process ``rank``."""

    def __init__(self, rank: int, processes: int, device: str = "cpu") -> None:
        self.rank, self.processes, self.device = rank, processes, device

    @contextlib.contextmanager
    def split_between_processes(self, items: list):
        per, extra = divmod(len(items), self.processes)
        start = self.rank * per + min(self.rank, extra)
        yield items[start : start + per + (self.rank < extra)]


def test_shares_seed_each_image_as_one_process_would() -> None:
    def seeds(best_of: int, processes: int, device=None) -> list[int]:
        args = argparse.Namespace(seed=100, num_images=5, best_of=best_of, device=device)
        out = []
        for rank in range(processes):
            share = share_of_images(args, _State(rank, processes))
            if share is not None:
                assert share.best_of == best_of and share.device == device
                out += [share.seed + i * best_of for i in range(share.num_images)]
        return out

    assert seeds(1, 1) == seeds(1, 2) == seeds(1, 3) == [100, 101, 102, 103, 104]
    assert seeds(4, 2) == seeds(4, 8) == [100, 104, 108, 112, 116]
    args = argparse.Namespace(seed=0, num_images=5, best_of=1, device=None)
    assert share_of_images(args, _State(1, 2, "cuda:1")).device == "cuda:1"
    assert share_of_images(args, _State(7, 8)) is None  # more processes than images
