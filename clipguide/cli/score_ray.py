"""``clipguide score ... --engine ray``: the same rows as ``clipguide score``, computed on a Ray
cluster (local by default, ``--address auto`` for a running one) into a folder of Parquet
parts, one per shard, resumable with ``--resume`` (see :mod:`clipguide.distributed`).

Every option is checked, and Ray's presence too, before Ray starts or any model loads.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from clipguide.cli.args import CLIError, check_output_folder, non_negative_float, positive_int

__all__ = ["ray_options", "run_score_ray", "RAY_ONLY"]

logger = logging.getLogger(__name__)

DEFAULT_JUDGE = "ViT-bigG-14 (the default)"

# dest -> option, for the options that only the Ray engine reads (default None: "not given")
RAY_ONLY = {
    "address": "--address",
    "concurrency": "--concurrency",
    "gpus_per_worker": "--gpus-per-worker",
    "cpus_per_worker": "--cpus-per-worker",
    "shard_size": "--shard-size",
}


def _positive_float(value: str) -> float:
    number = non_negative_float(value)
    if number == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return number


def ray_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--engine`` and the Ray engine's options to ``clipguide score``."""
    group = parser.add_argument_group("large jobs (--engine ray; README 'Large jobs')")
    group.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this process, one output file (default); ray: a Ray cluster, --out is a "
        "folder of Parquet parts",
    )  # fmt: skip
    for flag, kind, text in (
        ("--address", None,
         "Ray cluster to join ('auto': the one 'ray start' runs here; default: a local one)"),
        ("--concurrency", positive_int,
         "model workers (actors), each loading the judge once (default 1)"),
        ("--gpus-per-worker", non_negative_float,
         "GPUs per model worker (default 0: CPU; 1: one GPU each, fp16 unless --dtype)"),
        ("--cpus-per-worker", _positive_float,
         "CPUs Ray reserves per model worker (default 0.5: the rest decode images)"),
        ("--shard-size", positive_int,
         "images per Parquet part, the unit --resume skips (default 1000)"),
    ):  # fmt: skip
        group.add_argument(flag, type=kind, default=None, help=text)  # None: "not given"


def _check(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The job's source and prompt, every option checked; Ray's presence too."""
    for option, flag in (("robust", "--robust"), ("format", "--format"), ("device", "--device")):
        if getattr(args, option):
            why = ": workers pick their device (--gpus-per-worker)" if option == "device" else ""
            raise CLIError(f"{flag} is not supported with --engine ray{why}")
    if args.prompts and args.paths:
        raise CLIError(
            "--engine ray reads image PATHS with --prompt, or a manifest --prompts FILE "
            "(.parquet, .jsonl, .csv) alone; got both"
        )
    if not args.prompts and not args.paths:
        raise CLIError("no images: pass PATHS (files, folders, globs) or --prompts FILE")
    out = Path(args.out)
    if out.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet"):
        raise CLIError(f"--out {out}: --engine ray writes a folder of Parquet parts; name a folder")
    check_output_folder(out, "--out")
    from clipguide.distributed.ray_score import require_ray

    try:
        require_ray()
    except ImportError as err:
        raise CLIError(f"--engine ray: {err}") from None
    return (args.prompts or list(args.paths)), args.prompt


def _preprocess(args: argparse.Namespace) -> Any:
    """The judge's preprocessing for the decoding tasks, before Ray starts (from configs for
    open_clip names; other sources load here once); a failure names --model."""
    from clipguide.distributed.ray_score import preprocess_for

    try:
        return preprocess_for(args.model, args.pretrained)
    except Exception as err:  # noqa: BLE001 - any loading failure names the option
        raise CLIError(f"--model {args.model or DEFAULT_JUDGE}: {err}", code=1) from err


def _init_ray(address: str | None, progress: bool) -> None:
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, ValueError...
            shown = address or "a local cluster"
            raise CLIError(f"--address {shown}: cannot start or join Ray: {err}", 1) from err
    DataContext.get_current().enable_progress_bars = progress


def _check_resources(args: argparse.Namespace) -> None:
    """The pool asked for fits the cluster (else Ray would wait forever); names the options."""
    import ray

    from clipguide.distributed.ray_score import check_resources

    try:
        check_resources(
            ray.cluster_resources(), args.concurrency or 1, args.gpus_per_worker or 0.0,
            args.cpus_per_worker or 0.5,
        )  # fmt: skip
    except ValueError as err:
        text = str(err)
        for dest, flag in RAY_ONLY.items():  # the library's argument names -> the options
            text = text.replace(f"{dest}=", f"{flag} ")
        raise CLIError(text.replace("lower cpus_per_worker", "lower --cpus-per-worker")) from None


def _job_failure(err: Exception, args: argparse.Namespace) -> str:
    """One line for a failed Ray job: the root error Ray's message ends with, and the option
    it points at (a model worker that could not start names --model)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    cause = causes[-1] if causes else (lines[0] if lines else type(err).__name__)
    if "creation task" in str(err) or ("ImageScorer" in str(err) and "__init__" in str(err)):
        return f"--model {args.model or DEFAULT_JUDGE}: a model worker could not start: {cause}"
    return f"--engine ray: the job failed: {cause}"


def run_score_ray(args: argparse.Namespace) -> int:
    """``clipguide score --engine ray``: score into ``--out``'s Parquet parts."""
    from clipguide.cli.score_settings import as_option
    from clipguide.cli.summary import plural, say
    from clipguide.distributed.jobs import job_settings, run_job
    from clipguide.distributed.parts import prepare_output
    from clipguide.distributed.ray_score import job_items
    from clipguide.scoring.metrics import HESSEL_SCALE

    source, prompt = _check(args)
    shard_size = args.shard_size or 1000
    options = dict(
        model=args.model, pretrained=args.pretrained, dtype=args.dtype,
        concurrency=args.concurrency or 1, gpus_per_worker=args.gpus_per_worker or 0.0,
        cpus_per_worker=args.cpus_per_worker or 0.5, batch_size=args.batch_size,
        scale=HESSEL_SCALE if args.hessel else 100.0,
    )  # fmt: skip
    check = dict(settings=job_settings(options), shown=as_option)
    try:
        items = job_items(source, prompt, shard_size)
        out = Path(args.out)  # checked now, written once Ray runs and the pool fits
        prepare_output(out, items, shard_size, args.resume, args.overwrite, "--out", True, **check)
    except (ValueError, TypeError) as err:
        raise CLIError(str(err).replace("overwrite=True (--overwrite)", "--overwrite")) from None
    preprocess = _preprocess(args)
    _init_ray(args.address, not args.no_progress)
    _check_resources(args)
    try:
        summary = run_job(
            items, out, shard_size=shard_size, resume=args.resume, overwrite=args.overwrite,
            preprocess=preprocess, shown=as_option, **options,
        )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - a failed Ray job: one line, -v for the cause
        raise CLIError(_job_failure(err, args), code=1) from err
    counts = {k: plural(summary[k], w) for k, w in (("rows", "row"), ("errors", "error"))}
    kept = f", {summary['skipped']} kept from before" if args.resume else ""
    say(
        f"{out}: {counts['rows']}, {counts['errors']} in {plural(summary['shards'], 'part')} "
        f"({summary['written']} written now{kept})"
    )
    return 0
