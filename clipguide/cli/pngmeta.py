"""What ``generate`` writes into and names each PNG: an A1111-style ``parameters`` text chunk
(read by A1111's PNG Info, ComfyUI and image sites) and a file name that tells prompts and
settings apart.

The chunk reads as A1111 writes it::

    a red fox in snow
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 1344x768, Model: my-sdxl, ...

followed by clipguide's own settings (guidance, best-of-N). Values holding ``,``, ``:`` or
quotes are JSON-quoted, as A1111 quotes them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["sampler_name", "parameters_text", "png_bytes", "slug", "file_stem"]

_SAMPLERS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "HeunDiscreteScheduler": "Heun",
    "DDIMScheduler": "DDIM",
    "DDPMScheduler": "DDPM",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "UniPCMultistepScheduler": "UniPC",
    "LMSDiscreteScheduler": "LMS",
    "PNDMScheduler": "PLMS",
}


def sampler_name(scheduler: Any) -> tuple[str, str | None]:
    """A1111's sampler name for a diffusers scheduler, and its schedule type (Karras or None)."""
    cls = type(scheduler).__name__
    config = getattr(scheduler, "config", {})
    name = _SAMPLERS.get(cls, cls)
    if cls == "DPMSolverMultistepScheduler":
        algorithm = config.get("algorithm_type", "dpmsolver++")
        order = config.get("solver_order", 2)
        name = {"dpmsolver++": "DPM++", "sde-dpmsolver++": "DPM++ SDE"}.get(algorithm, "DPM")
        name += f" {order}M"
        name = name.replace("SDE 2M", "2M SDE")
    return name, ("Karras" if config.get("use_karras_sigmas") else None)


def _value(value: Any) -> str:
    text = (
        value
        if isinstance(value, str)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )
    return json.dumps(text) if re.search(r"[,:\"\n]", text) else text


def parameters_text(record: dict[str, Any], scheduler: Any) -> str:
    """The A1111 ``parameters`` text of one image from its sidecar record."""
    sampler, schedule = sampler_name(scheduler)
    width, height = record["size"]
    fields: dict[str, Any] = {"Steps": record["steps"], "Sampler": sampler}
    if schedule:
        fields["Schedule type"] = schedule
    fields.update(
        {
            "CFG scale": float(record["cfg_scale"]),
            "Seed": record["seed"],
            "Size": f"{width}x{height}",
            "Model": _model_name(record["model"]),
        }
    )
    if record.get("dtype"):
        fields["Dtype"] = record["dtype"]
    if record.get("loras"):
        fields["LoRA"] = ", ".join(f"{p}:{s:g}" for p, s in record["loras"])
    guidance = record.get("clip_guidance")
    if guidance:
        fields["clipguide guidance"] = (
            f"{guidance['scale']:g} {guidance['mode']} (decoder {guidance['decoder']})"
        )
    picks = record.get("best_of")
    if picks:
        fields["clipguide best-of"] = f"{picks['n']} by {picks['method']} (judge {picks['judge']})"
    fields["Version"] = f"clipguide {_version()}"
    lines = [record["prompt"]]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    lines.append(", ".join(f"{k}: {_value(v)}" for k, v in fields.items()))
    return "\n".join(lines)


def _model_name(model: str) -> str:
    """A folder or checkpoint file by its name (as A1111 names checkpoints); else as given."""
    path = Path(model).expanduser()
    return path.stem if path.is_file() else path.name if path.is_dir() else model


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clipguide")
    except PackageNotFoundError:
        return "unknown"


def png_bytes(image: Any, parameters: str) -> bytes:
    """The image as PNG bytes with ``parameters`` in a text chunk (iTXt when not Latin-1)."""
    import io

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "image"


def file_stem(prompt: str, settings: dict[str, Any], seed: int, shown: str | None = None) -> str:
    """``<slug of shown>-<hash>-<seed>``: the hash covers the whole prompt and every setting
    that changes the image, so prompts that differ only past the slug, or runs with other
    settings, never write the same file; the same command rewrites the same files.
    ``shown``: the text the slug is made of (default the prompt; e.g. its plain text)."""
    key = json.dumps({"prompt": prompt, **settings}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    return f"{slug(shown if shown is not None else prompt, 40)}-{digest}-{seed}"
