"""Image inputs: turn PIL images of any mode, arrays, tensors, files and bytes into RGB images.

Two outputs exist: an RGB ``PIL.Image.Image`` (for files, PIL and uint8/uint16 arrays) and a float
``(3, H, W)`` tensor in [0, 1] (for float arrays and tensors; the autograd graph is kept).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageInput",
    "ImageSource",
    "UnreadableImageError",
    "to_rgb",
    "load_image",
    "as_image_list",
    "to_tensor",
]

ImageInput = Image.Image | np.ndarray | torch.Tensor | str | os.PathLike | Sequence[Any]

_ACCEPTED = (
    "a PIL image (any mode), a numpy uint8 array HWC or NHWC (uint16, or float in [0, 1]), "
    "a torch float tensor CHW or NCHW in [0, 1], a file path (str or Path), or a list of these"
)
# 16-bit integer modes, scaled by 1/257 so 65535 maps to 255 (Pillow's own convert clips at 255).
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_RANGE_TOLERANCE = 1.0 / 255.0


class UnreadableImageError(ValueError):
    """A file that cannot be decoded as an image; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")


def _on_white(image: Image.Image) -> Image.Image:
    """Composite an image carrying alpha onto a white background."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB PIL image; transparency is composited on white.

    16-bit modes (``I;16*`` and ``I``) are scaled to 8 bits rather than clipped; ``F`` is read
    as values in [0, 1]. CMYK, YCbCr, LAB, HSV, ``1``, ``L`` and ``P`` use Pillow's conversions.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        return _on_white(image)
    if mode == "P":
        if "transparency" in image.info:
            return _on_white(image)
        return image.convert("RGB")
    if mode in ("RGBX", "L", "1", "CMYK", "YCbCr", "HSV"):
        return image.convert("RGB")
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        grey = np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ValueError(f"image has PIL mode {mode!r} which cannot be converted to RGB") from err


ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


def _opened(source: Any, name: str | None) -> tuple[Any, str]:
    """What ``Image.open`` reads for ``source``, and the name its errors carry."""
    if isinstance(source, (str, os.PathLike)):
        return source, name or os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source), name or f"<{len(source)} bytes>"
    if isinstance(source, io.TextIOBase):
        raise TypeError(
            "path is a text file object; open the image in binary mode (open(file, 'rb'))"
        )
    if callable(getattr(source, "read", None)):
        label = name or str(getattr(source, "name", "<file object>"))
        seekable = getattr(source, "seekable", None)
        if not (callable(seekable) and seekable()):  # Pillow seeks: buffer a stream first
            return io.BytesIO(source.read()), label
        return source, label
    raise TypeError(
        f"path must be a str or os.PathLike, got {type(source).__name__}; also accepted: "
        "bytes, bytearray, memoryview or a binary file object (open(file, 'rb'), io.BytesIO)"
    )


def load_image(path: ImageSource, *, name: str | None = None) -> Image.Image:
    """Read an image fully into an RGB PIL image (EXIF orientation applied).

    Every reader decodes through this function, so a file on disk, its bytes (from an object
    store, a Parquet column or a WebDataset shard) and an open binary file give the same image.

    Args:
        path: a file path (str or os.PathLike), the file's bytes (bytes, bytearray,
            memoryview) or a binary file object (read from its current position).
        name: what errors call the image (default: the path, the file object's name or
            ``<N bytes>``).

    Raises:
        UnreadableImageError: missing, truncated, corrupt or non-image data, with the reason.
        TypeError: anything else (a text file object included).
    """
    source, label = _opened(path, name)
    try:
        with Image.open(source) as opened:
            opened.load()
            rgb = to_rgb(ImageOps.exif_transpose(opened))
            return rgb.copy() if rgb is opened else rgb
    except FileNotFoundError:
        raise UnreadableImageError(label, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImageError(label, "is a directory") from None
    except UnidentifiedImageError:
        raise UnreadableImageError(label, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(label, f"{type(err).__name__}: {err}") from None


def _check_range(tensor: torch.Tensor, name: str) -> None:
    lo, hi = float(tensor.detach().min()), float(tensor.detach().max())
    if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        hint = " (looks like [-1, 1]: pass (x + 1) / 2)" if lo < -0.25 else ""
        hint = hint or (" (looks like [0, 255]: pass x / 255)" if hi > 2.0 else "")
        raise ValueError(
            f"{name} must hold values in [0, 1], got min {lo:.4g} and max {hi:.4g}{hint}; "
            "clamp with .clamp(0, 1) or pass check_range=False"
        )


def _tensor_items(tensor: torch.Tensor, name: str, check_range: bool) -> list[torch.Tensor]:
    """Split a CHW/NCHW tensor into float CHW tensors with 3 channels, keeping the graph."""
    shape = tuple(tensor.shape)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} tensor must be CHW or NCHW with 1 or 3 channels, got shape "
            f"{shape}; accepted: {_ACCEPTED}"
        )
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif not tensor.is_floating_point():
        raise TypeError(
            f"{name} tensor must be floating point in [0, 1] (or uint8), got dtype {tensor.dtype}"
        )
    elif check_range and tensor.numel():
        _check_range(tensor, name)
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return list(tensor.unbind(0))


def _array_items(array: np.ndarray, name: str, check_range: bool) -> list[Any]:
    """Split an HW/HWC/NHWC array into RGB PIL images (uint8) or CHW tensors (float)."""
    shape = array.shape
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{name} array must be HW, HWC or NHWC with 1, 3 or 4 channels last, got shape "
            f"{shape}; accepted: {_ACCEPTED}"
        )
    if array.dtype == np.uint8:
        modes = {1: "L", 3: "RGB", 4: "RGBA"}
        channels = array.shape[-1]
        return [
            to_rgb(
                Image.fromarray(
                    np.ascontiguousarray(a[..., 0] if channels == 1 else a), mode=modes[channels]
                )
            )
            for a in array
        ]
    if array.dtype == np.uint16 and array.shape[-1] != 4:  # 16-bit PNG/TIFF data, as to_rgb
        array = np.round(array / 257.0).astype(np.uint8)
        return _array_items(array, name, check_range)
    if np.issubdtype(array.dtype, np.floating):
        if array.shape[-1] == 4:
            raise ValueError(f"{name} float array must have 1 or 3 channels, got shape {shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
        return _tensor_items(tensor, name, check_range)
    raise TypeError(
        f"{name} array must be uint8, uint16 or floating point in [0, 1], got dtype {array.dtype}"
    )


def as_image_list(
    images: ImageInput, *, name: str = "images", check_range: bool = True
) -> list[Image.Image | torch.Tensor]:
    """Normalise image inputs to a list of RGB PIL images and float CHW tensors in [0, 1].

    Batched arrays/tensors are split into one item per image; tensors keep their autograd
    graph, device and floating dtype. Items of a list may mix forms and sizes.

    Args:
        images: a PIL image, numpy uint8 HWC/NHWC (or float in [0, 1]), torch float CHW/NCHW
            in [0, 1], a file path, or a list/tuple of any of these.
        name: argument name used in error messages.
        check_range: raise if float tensors leave [0, 1] by more than 1/255.
    """
    if isinstance(images, Image.Image):
        return [to_rgb(images)]
    if isinstance(images, (str, os.PathLike)):
        return [load_image(Path(images))]
    if isinstance(images, torch.Tensor):
        return _tensor_items(images, name, check_range)
    if isinstance(images, np.ndarray):
        return _array_items(images, name, check_range)
    if isinstance(images, (list, tuple)):
        items: list[Image.Image | torch.Tensor] = []
        for index, item in enumerate(images):
            if isinstance(item, (list, tuple)):
                raise TypeError(f"{name}[{index}] is a nested {type(item).__name__}; {_ACCEPTED}")
            items.extend(as_image_list(item, name=f"{name}[{index}]", check_range=check_range))
        return items
    raise TypeError(f"{name} must be {_ACCEPTED}; got {type(images).__name__}")


def to_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """Return an item of :func:`as_image_list` as a float CHW tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        return image
    array = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
