"""Start-up of clipguide against another commit's code, side by side in one run.

Each measurement runs in a fresh interpreter, alternating the two trees, ``--repeats`` times;
medians are reported (wall seconds, start-up included):

- ``python``: the bare interpreter (``python -c pass``), the floor under everything else;
- ``import``: ``import clipguide``; ``help``, ``score_help``, ``generate_help``: the CLI;
- ``score_cli``: ``clipguide score`` of ``--images`` micro-world images with the micro world's
  CLIP in process; ``score_ray``: the same job with ``--engine ray`` (a local Ray cluster
  started by the command, its workers' imports and model loads included);
- where a Ray worker's time goes, for each tree: ``ray_init`` (``ray.init`` + shutdown, no
  clipguide), ``decode_import`` (what a decoding task imports: ``clipguide.distributed.ray_score``)
  and ``actor_start`` (what a model actor imports and loads: ``ImageScorer`` built).

The base tree is ``git archive`` of ``--base`` (default e84b628, before lazy imports) in a
temporary folder. Last line: JSON. Example: ``python benchmarks/startup.py --repeats 3``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "two red circles above a blue square"
# a model actor: the preprocessing arrives pickled (as Ray ships it), then the actor is built
ACTOR = (
    "import pickle, sys\n"
    "pre = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
    "from clipguide.distributed.ray_score import ImageScorer\n"
    "ImageScorer('shapes', None, None, 100.0, pre)"
)
RAY_INIT = (
    "import ray\n"
    "ray.init(include_dashboard=False, log_to_driver=False)\n"
    "ray.get(ray.remote(lambda: 1).remote())\n"
    "ray.shutdown()"
)


def timed(tree: Path, command: list[str]) -> float:
    """Wall seconds of ``command`` in a fresh process that imports clipguide from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed in {tree}:\n{done.stderr[-2000:]}")
    return seconds


def make_images(folder: Path, count: int) -> None:
    sys.path.insert(0, str(ROOT))
    from clipguide.shapes import render, sample_scene

    for seed in range(count):
        render(sample_scene(seed)).save(folder / f"scene-{seed:03d}.png")


def shipped_preprocess() -> str:
    """The micro world CLIP's preprocessing, pickled (hex), as the Ray driver ships it."""
    import pickle

    from clipguide.model import load_clip

    return pickle.dumps(load_clip("shapes", towers=("vision",)).preprocess).hex()


def commands(images: Path, out: Path, preprocess: str) -> dict[str, list[str]]:
    py = sys.executable
    cli = [py, "-m", "clipguide"]
    score = [*cli, "score", str(images), "--prompt", PROMPT, "--model", "shapes", "--no-progress"]
    return {
        "python": [py, "-c", "pass"],
        "import": [py, "-c", "import clipguide"],
        "help": [*cli, "--help"],
        "score_help": [*cli, "score", "--help"],
        "generate_help": [*cli, "generate", "--help"],
        "score_cli": [*score, "--out", str(out / "scores.csv"), "--overwrite"],
        "score_ray": [*score, "--engine", "ray", "--out", str(out / "parts"), "--overwrite"],
        "ray_init": [py, "-c", RAY_INIT],
        "decode_import": [py, "-c", "import clipguide.distributed.ray_score"],
        "actor_start": [py, "-c", ACTOR, preprocess],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="e84b628", help="commit to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], help="measurements to leave out")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.base], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        images = Path(tmp) / "images"
        images.mkdir()
        make_images(images, args.images)
        trees = {"base": base, "new": ROOT}
        for tree in trees.values():  # both start with compiled bytecode
            subprocess.run([sys.executable, "-m", "compileall", "-q", "clipguide"], cwd=tree)
        preprocess = shipped_preprocess()
        outs = {name: Path(tmp) / f"out-{name}" for name in trees}
        for out in outs.values():
            out.mkdir()
        table = {name: commands(images, outs[name], preprocess) for name in trees}
        times: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for what in table["new"]:
            if what in args.skip:
                continue
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    seconds = timed(tree, table[name][what])
                    times[name].setdefault(what, []).append(seconds)
    medians = {
        name: {what: round(statistics.median(s), 3) for what, s in rows.items()}
        for name, rows in times.items()
    }
    result: dict = {"base": args.base, "repeats": args.repeats, "images": args.images}
    result["median_s"] = medians
    result["ratio_new_over_base"] = {
        what: round(medians["new"][what] / medians["base"][what], 3) for what in medians["new"]
    }
    for name in trees:
        rows = medians[name]
        if "score_ray" in rows and "score_cli" in rows:
            result[f"{name}_ray_minus_cli_s"] = round(rows["score_ray"] - rows["score_cli"], 2)
    print(f"{'median wall s':<16}{args.base:>10}{'new':>10}{'new/base':>10}")
    for what in medians["new"]:
        print(
            f"{what:<16}{medians['base'][what]:>10.3f}{medians['new'][what]:>10.3f}"
            f"{result['ratio_new_over_base'][what]:>10.3f}"
        )
    for name in trees:
        if f"{name}_ray_minus_cli_s" in result:
            print(f"{name}: Ray engine - in-process CLI = {result[f'{name}_ray_minus_cli_s']} s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
