"""Finding and reading checkpoint files: the local Hugging Face cache, safetensors, pickles."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate import init_empty_weights

__all__ = [
    "WeightsNotFoundError",
    "OPENCLIP_WEIGHTS",
    "hub_file",
    "read_weights",
    "offline_hint",
    "build_module",
]

OPENCLIP_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)


class WeightsNotFoundError(FileNotFoundError):
    """Weights are neither on disk nor reachable (offline)."""


def offline_hint(model_id: str, what: str = "weights") -> str:
    return (
        f"The {what} for {model_id!r} are not in the local Hugging Face cache and cannot be "
        f"downloaded (offline: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). "
        f"Download them where the hub is reachable (`hf download {model_id.rstrip('/')}`) and "
        f"point at the folder: load_clip('local-dir:/path/to/open_clip_folder') for open_clip "
        f"layout (open_clip_config.json + open_clip_model.safetensors), or "
        f"load_clip('/path/to/folder') for transformers layout (config.json + model.safetensors)."
    )


def hub_file(repo_id: str, filenames: tuple[str, ...], cache_dir: str | None) -> str:
    """First of ``filenames`` found for ``repo_id``: the local cache first, then the hub once."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for name in filenames:
        try:
            return hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=True)
        except Exception:  # noqa: BLE001,S112 - not cached; try the next name
            continue
    tried = ", ".join(filenames)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on"):
        for name in filenames:
            try:
                return hf_hub_download(repo_id, name, cache_dir=cache_dir, etag_timeout=5)
            except EntryNotFoundError:
                continue  # reachable, but no such file: try the next name
            except Exception:  # noqa: BLE001 - unreachable hub: stop asking
                break
    what = "weights" if any("model" in f for f in filenames) else "files"
    raise WeightsNotFoundError(offline_hint(repo_id, what) + f" (looked for: {tried})")


_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors(path: str, keep, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Read the kept tensors of a safetensors file straight into fresh CPU tensors.

    Plain reads instead of a memory map keep peak resident memory at the size of the tensors
    themselves (a map would count the file pages as well); casting happens tensor by tensor.
    """
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        base = 8 + n
        for key, meta in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            if not keep(key):
                continue
            start, end = meta["data_offsets"]
            t = torch.empty(meta["shape"], dtype=_ST_DTYPES[meta["dtype"]])
            f.seek(base + start)
            if end > start:
                f.readinto(memoryview(t.view(-1).view(torch.uint8).numpy()))
            out[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


def read_weights(
    path: str | Path, keep, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Read a checkpoint, keeping keys for which ``keep(key)`` is true."""
    path = str(path)
    if path.endswith(".safetensors"):
        return _read_safetensors(path, keep, dtype)
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
        for k, v in sd.items()
        if keep(k)
    }


def build_module(cls, config, sd: Mapping[str, torch.Tensor] | None, device, dtype):
    """Instantiate a tower; with a state dict, allocate nothing before the weights arrive."""
    if sd is None:
        model = cls(config)
        return model.to(device=device, dtype=dtype).requires_grad_(False).eval()
    with init_empty_weights(include_buffers=False):
        model = cls(config)
    own = model.state_dict()
    wanted = {k: v for k, v in sd.items() if k in own}
    missing = sorted(set(own) - set(wanted))
    if missing:
        raise KeyError(f"checkpoint lacks {len(missing)} {cls.__name__} keys, e.g. {missing[:3]}")
    wanted = {k: v.to(device=device or "cpu", dtype=dtype or v.dtype) for k, v in wanted.items()}
    model.load_state_dict(wanted, strict=True, assign=True)
    # an inference model: gradients may flow through it (guidance) but never into it
    return model.to(device=device).requires_grad_(False).eval()
