"""Finding and reading checkpoint files: the local Hugging Face cache, safetensors, pickles."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate import init_empty_weights

__all__ = [
    "WeightsNotFoundError",
    "CheckpointError",
    "OPENCLIP_WEIGHTS",
    "hub_file",
    "read_weights",
    "offline_hint",
    "build_module",
    "read_openclip_config",
    "read_json_object",
    "logit_scale",
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
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    for name in filenames:
        try:
            return hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=True)
        except Exception:  # noqa: BLE001,S112 - not cached; try the next name
            continue
    tried = ", ".join(filenames)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on"):
        absent = 0
        for name in filenames:
            try:
                return hf_hub_download(repo_id, name, cache_dir=cache_dir, etag_timeout=5)
            except RemoteEntryNotFoundError:
                absent += 1  # reachable, but no such file: try the next name
            except RepositoryNotFoundError:
                raise WeightsNotFoundError(
                    f"{repo_id!r} is not a repository on the Hugging Face hub (or it is private "
                    f"or gated: log in with `hf auth login`); expected one holding {tried}"
                ) from None
            except Exception:  # noqa: BLE001 - unreachable hub: stop asking
                break
        if absent == len(filenames):
            raise WeightsNotFoundError(
                f"the Hugging Face repository {repo_id!r} holds none of: {tried}"
            )
    what = "weights" if any("model" in f for f in filenames) else "files"
    raise WeightsNotFoundError(offline_hint(repo_id, what) + f" (looked for: {tried})")


_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A weights or config file that cannot be read as what it claims to be."""


def _bad(path: str, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable safetensors file: {why}")


def _header(f, path: str, size: int) -> tuple[dict, int]:
    """The checked JSON header of an open safetensors file and where its data start."""
    if size < 8:
        raise _bad(path, f"it has {size} bytes, fewer than the 8-byte header length")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > size - 8:
        raise _bad(
            path,
            f"its header claims {n} bytes but only {size - 8} follow (truncated, or not "
            f"safetensors)",
        )
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad(path, f"its {n}-byte header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise _bad(path, f"its header is a JSON {type(header).__name__}, not an object")
    header.pop("__metadata__", None)
    base = 8 + n
    for key, meta in header.items():
        _check_entry(path, key, meta, size - base)
    return header, base


def _check_entry(path: str, key: str, meta, data_size: int) -> None:
    """One header entry: a known dtype, a shape, and offsets inside the file that fit both."""
    if not isinstance(meta, dict) or not {"dtype", "shape", "data_offsets"} <= set(meta):
        raise _bad(path, f"header entry {key!r} lacks dtype, shape or data_offsets: {meta!r}")
    dtype, shape, offsets = meta["dtype"], meta["shape"], meta["data_offsets"]
    if dtype not in _ST_DTYPES:
        raise CheckpointError(
            f"{path}: tensor {key!r} has dtype {dtype!r}; supported: {sorted(_ST_DTYPES)}"
        )
    if not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
        raise _bad(path, f"tensor {key!r} has shape {shape!r} and data_offsets {offsets!r}")
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape + offsets):
        raise _bad(path, f"tensor {key!r}: shape {shape} / data_offsets {offsets} not sizes")
    start, end = offsets
    nbytes = math.prod(shape) * _ST_DTYPES[dtype].itemsize
    if end - start != nbytes:
        raise _bad(
            path, f"tensor {key!r} of shape {shape} ({dtype}) needs {nbytes} bytes, the header "
            f"gives {end - start} ({start}..{end})",
        )  # fmt: skip
    if end > data_size:
        raise _bad(
            path, f"tensor {key!r} ends at data byte {end} but the file holds only {data_size} "
            f"bytes of data (truncated?)",
        )  # fmt: skip


def _read_safetensors(path: str, keep, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Read the kept tensors of a safetensors file straight into fresh CPU tensors.

    Plain reads instead of a memory map keep peak resident memory at the size of the tensors
    themselves (a map would count the file pages as well); casting happens tensor by tensor.
    The header is checked against the file size first, and every read's byte count after, so a
    truncated file is an error, never a tensor of uninitialised memory.
    """
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        header, base = _header(f, path, os.fstat(f.fileno()).st_size)
        for key, meta in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            if not keep(key):
                continue
            start, end = meta["data_offsets"]
            t = torch.empty(meta["shape"], dtype=_ST_DTYPES[meta["dtype"]])
            f.seek(base + start)
            if end > start:
                got = f.readinto(memoryview(t.view(-1).view(torch.uint8).numpy()))
                if got != end - start:
                    raise _bad(path, f"tensor {key!r}: read {got} of {end - start} bytes")
            out[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


def _looks_like_safetensors(path: str) -> bool:
    """Whether a file (whatever its suffix) starts like safetensors: a length, then ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_pickle(path: str) -> Mapping:
    """A ``torch.save`` checkpoint, memory-mapped when zip-based, with ``weights_only=True``."""
    mmap = zipfile.is_zipfile(path)  # legacy (pre-1.6) pickles cannot be memory-mapped
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds objects other than tensors, which are not loaded (weights_only=True): "
            f"{' '.join(str(err).split())[:300]}"
        ) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as err:  # noqa: BLE001 - garbage makes the unpickler raise anything
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (safetensors, or torch.save zip or "
            f"legacy pickle): {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        ) from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(
            f"{path} holds a {type(sd).__name__}; expected a state dict (name -> tensor)"
        )
    return sd


def read_weights(
    path: str | Path, keep, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Read a checkpoint, keeping keys for which ``keep(key)`` is true.

    Safetensors files are recognised by suffix or content; anything else is read with
    ``torch.load(weights_only=True)`` (zip or legacy pickle format).
    """
    path = str(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): a download or copy that did not finish?")
    if path.endswith(".safetensors") or _looks_like_safetensors(path):
        return _read_safetensors(path, keep, dtype)
    sd = {k.removeprefix("module."): v for k, v in _read_pickle(path).items()}
    return {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
        for k, v in sd.items()
        if keep(k) and isinstance(v, torch.Tensor)
    }


def build_module(
    cls, config, sd: Mapping[str, torch.Tensor] | None, device, dtype, source: str = "checkpoint"
):
    """Instantiate a tower; with a state dict, allocate nothing before the weights arrive.

    ``source`` names the weights (and config) in errors: missing keys or shapes that differ
    from what the config builds are refused before any copy.
    """
    if sd is None:
        model = cls(config)
        return model.to(device=device, dtype=dtype).requires_grad_(False).eval()
    with init_empty_weights(include_buffers=False):
        model = cls(config)
    own = model.state_dict()
    wanted = {k: v for k, v in sd.items() if k in own}
    missing = sorted(set(own) - set(wanted))
    if missing:
        raise CheckpointError(
            f"{source}: the weights lack {len(missing)} of the {len(own)} {cls.__name__} "
            f"tensors, e.g. {missing[:3]} (weights of another architecture?)"
        )
    wrong = [k for k, v in wanted.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{source}: the weights do not fit the config: {len(wrong)} {cls.__name__} "
            f"tensors differ in shape, e.g. {k!r} is {list(wanted[k].shape)} in the weights, "
            f"{list(own[k].shape)} by the config (config and weights of different models?)"
        )
    ints = [
        k for k, v in wanted.items() if own[k].is_floating_point() and not v.is_floating_point()
    ]
    if ints:
        raise CheckpointError(
            f"{source}: {len(ints)} {cls.__name__} weights are stored as integers, e.g. "
            f"{ints[0]!r} as {wanted[ints[0]].dtype}; expected floating point (F32/F16/BF16)"
        )
    wanted = {k: v.to(device=device or "cpu", dtype=dtype or v.dtype) for k, v in wanted.items()}
    model.load_state_dict(wanted, strict=True, assign=True)
    # an inference model: gradients may flow through it (guidance) but never into it
    return model.to(device=device).requires_grad_(False).eval()


def read_json_object(path: Path) -> dict:
    """A JSON object from ``path``; a clear error naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}; expected an object")
    return data


def logit_scale(sd: Mapping[str, torch.Tensor] | None) -> float | None:
    """CLIP's temperature ``exp(logit_scale)`` from a state dict, if it holds one."""
    if sd is None or "logit_scale" not in sd:
        return None
    return float(sd["logit_scale"].float().exp())


def read_openclip_config(path: Path, towers) -> tuple[dict, dict]:
    """An ``open_clip_config.json`` and its model config, checked for what loading needs."""
    cfg = read_json_object(path)
    model_cfg = cfg.get("model_cfg", cfg)
    needed = {"embed_dim": int, "vision_cfg": dict}  # the preprocessing reads vision_cfg
    if "text" in towers:
        needed["text_cfg"] = dict
    for key, kind in needed.items():
        if not isinstance(model_cfg, dict) or key not in model_cfg:
            raise CheckpointError(
                f"{path} has no {key!r} in its model config; an open_clip config holds "
                f"'embed_dim', 'vision_cfg' and 'text_cfg' (under 'model_cfg' or at the top)"
            )
        if not isinstance(model_cfg[key], kind) or isinstance(model_cfg[key], bool):
            raise CheckpointError(
                f"{path}: {key}={model_cfg[key]!r} should be a JSON "
                f"{'number' if kind is int else 'object'}"
            )
    if not isinstance(cfg.get("preprocess_cfg", {}), dict):
        raise CheckpointError(f"{path}: preprocess_cfg should be a JSON object")
    return cfg, model_cfg
