"""Image input handling: every PIL mode, arrays, tensors, files, and the errors for bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipguide.model.images import (
    UnreadableImageError,
    as_image_list,
    load_image,
    to_rgb,
    to_tensor,
)


def _pixel(image: Image.Image) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(image)[0, 0])


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("RGB", (10, 20, 30), (10, 20, 30)),
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # fully transparent -> white
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),  # half black over white
        ("LA", (0, 0), (255, 255, 255)),
        ("LA", (40, 255), (40, 40, 40)),
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("I;16", 65535, (255, 255, 255)),  # scaled, not clipped
        ("I;16", 257 * 100, (100, 100, 100)),
        ("I", 257 * 200, (200, 200, 200)),
        ("F", 0.5, (128, 128, 128)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ],
)
def test_to_rgb_modes(mode: str, value: object, expected: tuple[int, ...]) -> None:
    out = to_rgb(Image.new(mode, (3, 2), value))
    assert out.mode == "RGB" and out.size == (3, 2)
    assert _pixel(out) == pytest.approx(expected, abs=1)


def test_to_rgb_palette_with_and_without_transparency() -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255] + [255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    assert np.asarray(to_rgb(palette)).tolist() == [[[0, 0, 255], [255, 0, 0]]]
    palette.info["transparency"] = 0  # index 0 transparent -> white
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 255, 255], [255, 0, 0]]]


def test_to_rgb_rejects_non_images() -> None:
    with pytest.raises(TypeError, match="PIL.Image.Image, got ndarray"):
        to_rgb(np.zeros((2, 2, 3), np.uint8))  # type: ignore[arg-type]


def test_numpy_uint8_forms_become_rgb_pil() -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    (single,) = as_image_list(hwc)
    assert isinstance(single, Image.Image) and single.size == (7, 5)
    assert np.array_equal(np.asarray(single), hwc)
    nhwc = rng.integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
    items = as_image_list(nhwc)
    assert len(items) == 4 and np.array_equal(np.asarray(items[2]), nhwc[2])
    grey = as_image_list(hwc[..., 0])[0]
    assert np.array_equal(np.asarray(grey)[..., 1], hwc[..., 0])
    rgba = np.concatenate([hwc, np.zeros((5, 7, 1), np.uint8)], axis=-1)
    assert np.all(np.asarray(as_image_list(rgba)[0]) == 255)  # transparent -> white


def test_numpy_uint16_is_scaled_like_sixteen_bit_images() -> None:
    array = np.full((2, 3, 3), 257 * 40, np.uint16)
    (image,) = as_image_list(array)
    assert isinstance(image, Image.Image) and _pixel(image) == (40, 40, 40)


def test_numpy_float_becomes_tensor() -> None:
    array = np.random.default_rng(1).random((2, 4, 6, 3), dtype=np.float32)
    items = as_image_list(array)
    assert len(items) == 2 and all(isinstance(t, torch.Tensor) for t in items)
    assert items[1].shape == (3, 4, 6)
    assert torch.equal(items[1], torch.from_numpy(array[1]).permute(2, 0, 1))


def test_tensors_keep_graph_device_and_dtype() -> None:
    x = torch.rand(2, 3, 8, 9, requires_grad=True)
    items = as_image_list(x)
    assert len(items) == 2 and items[0].shape == (3, 8, 9)
    (items[0].sum() + 2 * items[1].sum()).backward()
    assert torch.equal(x.grad[0], torch.ones(3, 8, 9)) and torch.equal(
        x.grad[1], torch.full((3, 8, 9), 2.0)
    )
    half = as_image_list(torch.rand(3, 4, 4, dtype=torch.float16))[0]
    assert half.dtype == torch.float16
    grey = as_image_list(torch.rand(1, 5, 5))[0]
    assert grey.shape == (3, 5, 5) and torch.equal(grey[0], grey[2])
    as_uint8 = as_image_list(torch.full((3, 2, 2), 255, dtype=torch.uint8))[0]
    assert as_uint8.dtype == torch.float32 and torch.all(as_uint8 == 1.0)


@pytest.mark.parametrize(
    ("tensor", "hint"),
    [
        (torch.linspace(-1, 1, 48).reshape(3, 4, 4), r"\[-1, 1\]: pass \(x \+ 1\) / 2"),
        (torch.linspace(0, 255, 48).reshape(3, 4, 4), r"\[0, 255\]: pass x / 255"),
    ],
)
def test_tensor_out_of_range_is_a_clear_error(tensor: torch.Tensor, hint: str) -> None:
    with pytest.raises(ValueError, match=r"images must hold values in \[0, 1\], got min") as err:
        as_image_list(tensor)
    assert err.match(hint)
    assert len(as_image_list(tensor, check_range=False)) == 1


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            torch.rand(4, 5, 5),
            ValueError,
            r"CHW or NCHW with 1 or 3 channels, got shape \(4, 5, 5\)",
        ),
        (torch.rand(2, 2, 3, 4, 4), ValueError, r"got shape \(2, 2, 3, 4, 4\)"),
        (torch.ones(3, 4, 4, dtype=torch.int64), TypeError, "floating point"),
        (np.zeros((3, 4, 5), np.uint8), ValueError, r"channels last, got shape \(3, 4, 5\)"),
        (np.zeros((4, 4, 3), np.int32), TypeError, "uint8, uint16 or floating point"),
        (42, TypeError, "images must be a PIL image.*got int"),
        ([[Image.new("RGB", (2, 2))]], TypeError, r"images\[0\] is a nested list"),
    ],
)
def test_bad_inputs_name_argument_value_and_accepted(
    bad: object, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        as_image_list(bad)  # type: ignore[arg-type]


def test_bad_item_in_list_is_named_by_index() -> None:
    with pytest.raises(ValueError, match=r"images\[1\] tensor"):
        as_image_list([Image.new("RGB", (2, 2)), torch.rand(5, 2, 2)])


def test_mixed_list_keeps_order_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGBA", (6, 4), (0, 255, 0, 255)).save(path)
    items = as_image_list(
        [
            Image.new("L", (3, 3), 9),
            str(path),
            path,
            np.zeros((2, 5, 5, 3), np.uint8),
            torch.rand(3, 7, 2),
        ]
    )
    assert [type(i).__name__ for i in items] == [
        "Image",
        "Image",
        "Image",
        "Image",
        "Image",
        "Tensor",
    ]
    assert items[1].size == (6, 4) and _pixel(items[2]) == (0, 255, 0)
    assert items[5].shape == (3, 7, 2)


def test_load_image_files(tmp_path: Path) -> None:
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(rgba)
    assert _pixel(load_image(rgba)) == (255, 255, 255)
    sixteen = tmp_path / "grey16.png"
    Image.fromarray(np.full((3, 3), 65535, np.uint16)).save(sixteen)
    assert _pixel(load_image(sixteen)) == (255, 255, 255)
    jpeg = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(jpeg)
    assert load_image(str(jpeg)).mode == "RGB"


def test_load_image_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (2, 6)


def test_unreadable_files_are_errors_with_reasons(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    cases = {
        tmp_path / "missing.png": "file not found",
        text: "not a recognised image format",
        truncated: "rror",  # Pillow names the truncation error
        tmp_path: "is a directory",
    }
    for path, reason in cases.items():
        with pytest.raises(UnreadableImageError, match=reason) as err:
            load_image(path)
        assert err.value.path == str(path) and isinstance(err.value, ValueError)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        load_image(3)  # type: ignore[arg-type]


def test_to_tensor_matches_pixels() -> None:
    image = Image.new("RGB", (2, 2), (255, 0, 51))
    tensor = to_tensor(image)
    assert tensor.shape == (3, 2, 2)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    same = torch.rand(3, 2, 2)
    assert to_tensor(same) is same


def _saved_images(folder: Path) -> list[Path]:
    """An RGBA PNG, a 16-bit grey PNG, a palette PNG with transparency and a rotated JPEG."""
    rng = np.random.default_rng(0)
    rgba = folder / "rgba.png"
    Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), mode="RGBA").save(rgba)
    sixteen = folder / "grey16.png"
    Image.fromarray(rng.integers(0, 65536, (5, 6), dtype=np.uint16)).save(sixteen)
    palette = folder / "palette.png"
    Image.new("P", (4, 4), 3).save(palette, transparency=3)
    jpeg = folder / "rotated.jpg"
    image = Image.fromarray(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(jpeg, exif=exif)
    return [rgba, sixteen, palette, jpeg]


class _Stream(io.RawIOBase):
    """A binary stream that cannot seek (a socket or an HTTP body, say)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_load_image_bytes_and_file_objects_decode_like_paths(tmp_path: Path) -> None:
    for path in _saved_images(tmp_path):
        expected = to_tensor(load_image(path))
        data = path.read_bytes()
        with path.open("rb") as handle:
            from_handle = load_image(handle)
        decoded = [
            load_image(str(path)),
            load_image(data),
            load_image(bytearray(data)),
            load_image(memoryview(data)),
            load_image(io.BytesIO(data)),
            from_handle,
            load_image(_Stream(data)),
        ]
        for image in decoded:
            assert image.mode == "RGB"
            assert torch.equal(to_tensor(image), expected), path.name
    assert load_image(tmp_path / "rotated.jpg").size == (6, 10)  # EXIF applied to bytes too
    assert load_image((tmp_path / "rotated.jpg").read_bytes()).size == (6, 10)


def test_load_image_bytes_errors_name_the_source(tmp_path: Path) -> None:
    png = tmp_path / "ok.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(png)
    truncated = png.read_bytes()[:60]
    with pytest.raises(UnreadableImageError, match="not a recognised image format") as err:
        load_image(b"not an image")
    assert err.value.path == "<12 bytes>"
    with pytest.raises(UnreadableImageError, match="rror") as err:
        load_image(truncated, name="s3://bucket/ok.png")
    assert err.value.path == "s3://bucket/ok.png"
    with pytest.raises(UnreadableImageError, match="not a recognised image format"):
        load_image(b"")
    with pytest.raises(UnreadableImageError) as err:
        load_image(io.BytesIO(truncated))
    assert err.value.path == "<file object>"
    with (tmp_path / "notes.txt").open("w") as text, pytest.raises(TypeError, match="binary mode"):
        load_image(text)  # type: ignore[arg-type]
    for bad in (3, None, [png], np.zeros((2, 2), np.uint8)):
        with pytest.raises(TypeError, match="path must be a str or os.PathLike, got .*bytes"):
            load_image(bad)  # type: ignore[arg-type]
