"""``clipguide generate`` over 2 CPU processes (torchrun; accelerate's split_between_processes)
writes the files one process writes, under a hard timeout; and the share arithmetic."""

from __future__ import annotations

import argparse
import contextlib
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
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "clipguide"]
    run = subprocess.run(
        [*command, "generate", PROMPT, "--out", str(two), *OPTIONS],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 5 and sorted(n for n in names if n.endswith(".json")) == sorted(
        n.replace(".png", ".json") for n in pngs
    )
    # one printed line per image, starting with its path: each image drawn once, by one process
    printed = sorted(Path(line.split()[0]).name for line in run.stdout.splitlines() if line)
    assert printed == pngs
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
