"""CLIP scores of many images on Ray Data: decoding and preprocessing in Ray tasks, the vision
tower in a pool of actors (one model load each), errors kept as rows.

The pipeline is ``from_items(work items) -> map_batches(decode_batch) [tasks] ->
map_batches(ImageScorer) [ActorPoolStrategy]``. Tasks ship uint8 crops (a quarter of the float
batch's bytes); actors normalise them, run the tower and return one row per item with the
columns of ``clipguide score``: path, prompt, cosine, clipscore, error (and its shard).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from clipguide.distributed.sources import (
    MANIFEST_SUFFIXES,
    WorkItem,
    image_paths,
    is_uri,
    read_manifest,
    work_items,
)
from clipguide.model.images import UnreadableImageError, load_image
from clipguide.model.preprocess import Preprocess

__all__ = [
    "RAY_EXTRA",
    "require_ray",
    "job_items",
    "preprocess_for",
    "decode_batch",
    "ImageScorer",
    "check_resources",
    "score_items",
    "score_dataset",
]

RAY_EXTRA = 'pip install "clipguide[ray]"'
NO_PROMPT = "no prompt for this image in the manifest"


def require_ray() -> Any:
    """``ray`` (with Ray Data), or an ImportError that names the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra's part we use
    except ImportError as err:
        raise ImportError(
            f"the Ray engine needs Ray Data, which is not installed: {RAY_EXTRA} ({err})"
        ) from err
    return ray


def job_items(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    prompt: str | None = None,
    shard_size: int = 1000,
) -> list[WorkItem]:
    """The work items of a job: a manifest file (Parquet/JSONL/CSV with path and prompt), or
    image files, folders and globs scored against one ``prompt``."""
    manifest = isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(
        MANIFEST_SUFFIXES
    )
    if manifest:
        if prompt is not None:
            raise ValueError(f"prompt={prompt!r}: the manifest {source} carries the prompts")
        return work_items(read_manifest(source), shard_size)
    if not isinstance(prompt, str):
        raise TypeError(
            f"prompt must be a str when source is images (a folder, glob or files), got "
            f"{prompt!r:.80}; or pass a manifest (.parquet, .jsonl, .csv) with prompts"
        )
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths = image_paths(sources)
    if not paths:
        raise ValueError(f"source {source!r}: no image files found")
    return work_items(((p, prompt) for p in paths), shard_size)


def preprocess_for(model: str | None, pretrained: str | None) -> Preprocess:
    """The preprocessing of the judge, from configs when ``model`` is an open_clip name; any
    other source is loaded once here to read it."""
    from clipguide.model.openclip import DEFAULT_MODEL, name_preprocess

    found = name_preprocess(model or DEFAULT_MODEL, pretrained)
    if found is not None:
        return found
    from clipguide.model import load_clip

    kwargs = {} if pretrained is None else {"pretrained": pretrained}
    return load_clip(model, towers=("vision",), device="cpu", **kwargs).preprocess


def _read(path: str) -> Any:
    """A local path as is; a URI's bytes through pyarrow's filesystems (s3://, gs://, ...)."""
    if not is_uri(path):
        return path.removeprefix("file://")
    from pyarrow import fs

    try:
        filesystem, inner = fs.FileSystem.from_uri(path)
        with filesystem.open_input_file(inner) as handle:
            return handle.read()
    except FileNotFoundError:
        raise UnreadableImageError(path, "file not found") from None
    except (OSError, ValueError) as err:
        raise UnreadableImageError(path, f"{type(err).__name__}: {err}") from None


def decode_batch(batch: dict[str, np.ndarray], preprocess: Preprocess) -> dict[str, np.ndarray]:
    """Decode and crop a batch of work items (a Ray task): uint8 pixels, or an error per row."""
    count = len(batch["path"])
    size = preprocess.image_size
    pixels = np.zeros((count, 3, size, size), np.uint8)
    errors = []
    for i, (path, prompt) in enumerate(zip(batch["path"], batch["prompt"], strict=True)):
        error = ""
        try:
            pixels[i] = preprocess.crop_uint8(load_image(_read(str(path)), name=str(path)))
        except UnreadableImageError as err:
            error = err.reason
        except Exception as err:  # noqa: BLE001 - one bad file is a row, never a failed job
            error = f"{type(err).__name__}: {err}"
        if prompt is None:
            error = error or NO_PROMPT
        errors.append(error)
    return {**batch, "pixels": pixels, "error": np.array(errors, dtype=object)}


class ImageScorer:
    """A Ray actor's callable: loads the judge once, scores decoded batches."""

    def __init__(
        self,
        model: str | None,
        pretrained: str | None,
        dtype: str | None,
        scale: float,
        preprocess: Preprocess,
    ) -> None:
        import torch

        from clipguide.model import load_clip
        from clipguide.model.openclip import DEFAULT_MODEL
        from clipguide.scoring import CLIPScorer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = dtype or ("fp16" if self.device == "cuda" else None)
        kwargs: dict[str, Any] = {"device": self.device, "dtype": dtype}
        if pretrained is not None:
            kwargs["pretrained"] = pretrained
        self.clip = load_clip(model or DEFAULT_MODEL, **kwargs)
        if self.clip.preprocess != preprocess:
            raise ValueError(
                f"the judge's preprocessing {self.clip.preprocess} differs from the one the "
                f"decoding tasks use {preprocess}; pass preprocess= explicitly"
            )
        self.scorer = CLIPScorer(self.clip, scale=scale, progress=False)

    def _cosines(self, pixels: np.ndarray, prompts: list[str]) -> Any:
        import torch

        from clipguide.scoring.metrics import cosine, normalise

        vision = self.clip.vision_model
        with torch.no_grad(), self.clip.working():
            batch = torch.from_numpy(pixels).to(self.device)
            batch = self.clip.preprocess.from_uint8(batch).to(vision.dtype)
            images = normalise(self.clip.image_features(batch).float())
            texts = self.scorer.embed_prompts(prompts).to(images.device)
            return cosine(images, texts).cpu()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from clipguide.scoring import clip_score

        errors = [str(e) for e in batch["error"]]
        ready = [i for i, e in enumerate(errors) if not e]
        cos = np.full(len(errors), np.nan)
        scores = np.full(len(errors), np.nan)
        if ready:
            values = self._cosines(batch["pixels"][ready], [str(batch["prompt"][i]) for i in ready])
            clip = clip_score(values, self.scorer.scale)
            for j, i in enumerate(ready):
                if not math.isfinite(float(values[j])):
                    errors[i] = f"the model gave a non-finite score ({float(values[j])})"
                    continue
                cos[i] = round(float(values[j]), 6)  # as clipguide score writes them
                scores[i] = round(float(clip[j]), 6)
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out.update(cosine=cos, clipscore=scores, error=np.array(errors, dtype=object))
        return out


def score_items(
    items: list[WorkItem],
    *,
    model: str | None = None,
    pretrained: str | None = None,
    concurrency: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 0.5,
    decode_cpus: float = 1.0,
    batch_size: int = 32,
    dtype: str | None = None,
    scale: float = 100.0,
    preprocess: Preprocess | None = None,
) -> Any:
    """The Ray Dataset of scored rows for ``items`` (lazy: nothing runs until it is read)."""
    ray = require_ray()
    from ray.data import ActorPoolStrategy

    _check_options(concurrency, gpus_per_worker, cpus_per_worker, decode_cpus, batch_size)
    if not items:
        raise ValueError("items is empty: nothing to score")
    if ray.is_initialized():
        available = ray.cluster_resources()
        check_resources(available, concurrency, gpus_per_worker, cpus_per_worker, decode_cpus)
    pre = preprocess or preprocess_for(model, pretrained)
    blocks = max(1, min(math.ceil(len(items) / batch_size), 2000))  # streams batch by batch
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"preprocess": pre},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=decode_cpus,
    )
    return ds.map_batches(
        ImageScorer,
        fn_constructor_kwargs=dict(
            model=model, pretrained=pretrained, dtype=dtype, scale=scale, preprocess=pre
        ),
        compute=ActorPoolStrategy(size=concurrency),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
    )


def check_resources(
    available: dict[str, float],
    concurrency: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
    decode_cpus: float = 1.0,
) -> None:
    """Refuse a pool the cluster cannot hold: Ray would wait for it forever, without a word.

    The workers' CPUs must leave ``decode_cpus`` for a decoding task, and their GPUs
    must exist (on an autoscaling cluster, start the nodes first).
    """
    cpus, gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    if gpus_per_worker * concurrency > gpus:
        raise ValueError(
            f"gpus_per_worker={gpus_per_worker:g} x concurrency={concurrency} needs "
            f"{gpus_per_worker * concurrency:g} GPUs; the Ray cluster has {gpus:g}"
        )
    if cpus_per_worker * concurrency > cpus - decode_cpus:
        raise ValueError(
            f"cpus_per_worker={cpus_per_worker:g} x concurrency={concurrency} reserves "
            f"{cpus_per_worker * concurrency:g} of the cluster's {cpus:g} CPUs and leaves less "
            f"than the {decode_cpus:g} a decoding task needs; lower cpus_per_worker or concurrency"
        )


def _check_options(concurrency, gpus, cpus, decode_cpus, batch_size) -> None:
    checks = {
        "concurrency": (concurrency, isinstance(concurrency, int) and concurrency >= 1, ">= 1"),
        "batch_size": (batch_size, isinstance(batch_size, int) and batch_size >= 1, ">= 1"),
        "gpus_per_worker": (gpus, _number(gpus) and gpus >= 0, "a number >= 0"),
        "cpus_per_worker": (cpus, _number(cpus) and cpus > 0, "a number > 0"),
        "decode_cpus": (decode_cpus, _number(decode_cpus) and decode_cpus > 0, "a number > 0"),
    }
    for name, (value, ok, accepted) in checks.items():
        if not ok:
            raise ValueError(f"{name} must be {accepted}, got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def score_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    prompt: str | None = None,
    shard_size: int = 1000,
    **options: Any,
) -> Any:
    """Score a folder, glob or list of images against ``prompt``, or a manifest of (path,
    prompt) records, on Ray Data; returns the lazy Dataset of rows (path, prompt, cosine,
    clipscore, error, shard). ``options`` go to :func:`score_items`."""
    return score_items(job_items(source, prompt, shard_size), **options)
