"""The micro world registers its models with clipguide as any third party would.

Declared as the ``shapes`` entry point of the ``clipguide.sources`` group (pyproject.toml), so
``load_clip("shapes")`` and ``clipguide generate --model shapes`` work without importing this
package first: the registry calls :func:`register` the first time a name is not found. It
registers the two CLIPs, the pairing of the pipeline's text tower with the guide's vision
tower, and the pipeline for the command line with its defaults, tiny decoder and oracle.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache, partial
from typing import Any

from clipguide.cli.models import NamedModel, register_model
from clipguide.model.registry import LoadRequest, register_source, register_vision_pairing
from clipguide.shapes import shipped
from clipguide.shapes.shipped import CLIP_NAMES, WEIGHTS_DIR

__all__ = ["register", "is_shapes_text_tower", "oracle_records", "CLI_MODEL"]

log = logging.getLogger(__name__)
# what makes two CLIP text towers the same architecture (not their weights' values)
_ARCHITECTURE = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "projection_dim",
    "hidden_act",
)


def _load(name: str, request: LoadRequest) -> Any:
    from clipguide.model.checkpoints import WeightsNotFoundError
    from clipguide.model.openclip import load_openclip_folder

    folder = WEIGHTS_DIR / name
    if not folder.is_dir():
        raise WeightsNotFoundError(
            f"the shipped micro-world model {name!r} is missing at {folder}; reinstall "
            "clipguide or retrain it with `python -m clipguide.shapes.training clip|judge`"
        )
    return load_openclip_folder(folder, request, name)


@lru_cache(maxsize=1)
def _shapes_text_architecture() -> tuple:
    """The architecture of the shipped guide CLIP's text tower, read from its config."""
    from clipguide.model.convert import text_config_from_openclip

    config = json.loads((WEIGHTS_DIR / "shapes" / "open_clip_config.json").read_text())
    text = text_config_from_openclip(config["model_cfg"])
    return tuple(getattr(text, key) for key in _ARCHITECTURE)


def is_shapes_text_tower(text_model: Any) -> bool:
    """Whether a pipeline's text tower has the shipped guide CLIP's text architecture: the
    micro-world pipeline carries that tower as ``text_encoder_2``, so its vision tower pairs."""
    config = getattr(text_model, "config", None)
    if config is None:
        return False
    try:
        shipped = _shapes_text_architecture()
    except (OSError, ValueError, KeyError):  # weights missing or unreadable: pairs with nothing
        return False
    return tuple(getattr(config, key, None) for key in _ARCHITECTURE) == shipped


def oracle_records(images: list[Any], prompt: str) -> list[dict]:
    """The oracle's verdict on each image, as sidecar fields; none for a prompt outside the
    micro-world grammar (with a warning)."""
    from clipguide.shapes.oracle import check

    try:
        verdicts = [check(image, prompt) for image in images]
    except ValueError as err:  # prompt outside the micro-world grammar
        log.warning("no oracle verdict: %s", err)
        return [{} for _ in images]
    return [{"oracle": verdict.as_record()} for verdict in verdicts]


def _pipeline(device: Any, scheduler: str | None, progress: bool) -> Any:
    return shipped.pipeline(device=device, scheduler=scheduler, progress=progress)


def _tiny_decoder(pipe: Any) -> Any:
    return shipped.load_tiny_decoder(device=pipe.device)


CLI_MODEL = NamedModel(
    load=_pipeline,
    description="the micro world",
    steps=shipped.DEFAULT_STEPS,
    cfg=shipped.DEFAULT_GUIDANCE_SCALE,
    guide_clip="shapes",
    score_with=CLIP_NAMES,
    decoders={"tiny": _tiny_decoder},
    annotate=oracle_records,
    best_of=4,  # best-of-4 by the structured selection score: the test split's best recipe
    layout="auto",  # layouts where the dev split's policy uses them (benchmarks/regions_quality.py)
)
"""``clipguide generate --model shapes``: the shipped pipeline with its measured defaults."""


def register() -> None:
    """Register ``"shapes"``, ``"shapes-judge"``, the shapes vision pairing and the
    command line's ``--model shapes``."""
    for name in CLIP_NAMES:
        register_source(name, partial(_load, name))
    register_vision_pairing(is_shapes_text_tower, "shapes")
    register_model("shapes", CLI_MODEL)
