"""load_clip from every source form gives the same model as open_clip itself."""

import json
import os

import numpy as np
import pytest
import torch
from open_clip.transform import image_transform
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPModel, CLIPTextModelWithProjection

from clipguide import CLIP, load_clip
from clipguide.model import WeightsNotFoundError
from clipguide.model.convert import clip_config_from_openclip, openclip_to_transformers
from clipguide.testing import save_openclip_dir, tiny_openclip_model, tiny_sdxl_pipeline

PROMPTS = ["a red circle", "two blue squares above a green triangle", ""]
TOL = 1e-5


@pytest.fixture(scope="module")
def oc():
    return tiny_openclip_model(seed=7)


@pytest.fixture(scope="module")
def oc_dir(oc, tmp_path_factory):
    return save_openclip_dir(oc, tmp_path_factory.mktemp("oc"))


@pytest.fixture(scope="module")
def hf_dir(oc, tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("hf")
    model = CLIPModel(clip_config_from_openclip(open_clip.get_model_config("clipguide-tiny")))
    model.load_state_dict(openclip_to_transformers(oc.state_dict()), strict=False)
    model.save_pretrained(folder)
    return folder


def _image(seed=0, size=(45, 61), mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode)


def _reference(oc, prompts, images):
    import open_clip

    ids = open_clip.get_tokenizer("ViT-bigG-14")(prompts)
    pre = image_transform(32, is_train=False)
    with torch.no_grad():
        text = oc.encode_text(ids)
        img = oc.encode_image(torch.stack([pre(i) for i in images]), normalize=True)
    return text, img


def _assert_same(clip: CLIP, oc):
    images = [_image(0), _image(1, (32, 32))]
    ref_text, ref_img = _reference(oc, PROMPTS, images)
    with torch.no_grad():
        enc = clip.encode_text(PROMPTS)
        assert (enc.pooled - ref_text).abs().max() <= TOL
        assert (enc.embeds - torch.nn.functional.normalize(ref_text, dim=-1)).abs().max() <= TOL
        assert enc.hidden_states.shape == (3, 77, 32)
        assert (clip.encode_image(images) - ref_img).abs().max() <= TOL


def test_from_open_clip_model_object(oc):
    _assert_same(load_clip(oc), oc)


def test_from_local_dir_and_plain_folder(oc, oc_dir):
    _assert_same(load_clip(f"local-dir:{oc_dir}"), oc)
    _assert_same(load_clip(str(oc_dir)), oc)


def test_from_transformers_folder_keeps_projection_dim(oc, hf_dir):
    clip = load_clip(str(hf_dir))
    assert clip.text_model.config.projection_dim == 32  # not transformers' default 512
    _assert_same(clip, oc)


def test_from_single_tower_transformers_folder(oc, hf_dir, tmp_path):
    text = load_clip(str(hf_dir), towers=("text",)).text_model
    text.save_pretrained(tmp_path / "text")
    clip = load_clip(str(tmp_path / "text"), towers=("text",))
    assert clip.vision_model is None
    ref_text, _ = _reference(oc, PROMPTS, [_image()])
    with torch.no_grad():
        assert (clip.encode_text(PROMPTS).pooled - ref_text).abs().max() <= TOL


def test_from_name_with_checkpoint_file_safetensors_and_pickle(oc, tmp_path):
    save_file(oc.state_dict(), tmp_path / "w.safetensors")
    torch.save(oc.state_dict(), tmp_path / "w.bin")
    _assert_same(load_clip("clipguide-tiny", pretrained=str(tmp_path / "w.safetensors")), oc)
    _assert_same(load_clip("clipguide-tiny", pretrained=str(tmp_path / "w.bin")), oc)


def test_from_hf_hub_cache(oc, oc_dir, tmp_path, monkeypatch):
    """An ``hf-hub:`` id resolves from the local Hugging Face cache while offline."""
    snap = tmp_path / "models--someone--tiny-clip" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        (snap / name).write_bytes((oc_dir / name).read_bytes())
    (tmp_path / "models--someone--tiny-clip" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-clip" / "refs" / "main").write_text("abc123")
    _assert_same(load_clip("hf-hub:someone/tiny-clip", cache_dir=str(tmp_path)), oc)


def test_towers_and_dtypes(oc_dir):
    vision = load_clip(f"local-dir:{oc_dir}", towers=("vision",))
    assert vision.text_model is None and vision.vision_model is not None
    with pytest.raises(ValueError, match="no text tower"):
        vision.encode_text("x")
    for name, dt in (
        ("fp16", torch.float16),
        ("bf16", torch.bfloat16),
        (torch.float32, torch.float32),
    ):
        clip = load_clip(f"local-dir:{oc_dir}", dtype=name)
        assert clip.dtype == dt and clip.text_model.dtype == dt
        emb = clip.encode_image(_image())
        assert emb.dtype == torch.float32 and torch.isfinite(emb).all()


def test_tensor_images_are_differentiable(oc):
    clip = load_clip(oc)
    x = torch.rand(2, 3, 40, 56, requires_grad=True)
    clip.encode_image(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pipeline_reuses_its_text_tower(oc_dir):
    pipe = tiny_sdxl_pipeline()
    clip = load_clip(pipe, vision=f"local-dir:{oc_dir}")
    assert clip.text_model is pipe.text_encoder_2
    assert clip.tokenizer is pipe.tokenizer_2
    ptrs = {p.data_ptr() for p in pipe.text_encoder_2.parameters()}
    assert all(p.data_ptr() in ptrs for p in clip.text_model.parameters())
    assert clip.vision_model is not None and clip.towers == ("text", "vision")
    text_only = load_clip(pipe, towers=("text",))
    assert text_only.vision_model is None and text_only.text_model is pipe.text_encoder_2


def test_offline_missing_weights_error_names_model_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        load_clip(
            "ViT-bigG-14",
            pretrained="laion2b_s39b_b160k",
            towers=("vision",),
            cache_dir=str(tmp_path),
        )
    msg = str(info.value)
    assert "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k" in msg
    assert "not in the local Hugging Face cache" in msg and "local-dir:" in msg
    with pytest.raises(WeightsNotFoundError, match="laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"):
        load_clip("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", cache_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        (dict(source="no-such-model"), ValueError, "no-such-model"),
        (dict(source="local-dir:/nonexistent/folder"), FileNotFoundError, "/nonexistent/folder"),
        (dict(source="clipguide-tiny", pretrained="not-a-tag"), ValueError, "not-a-tag"),
        (dict(source="clipguide-tiny", pretrained=None, towers=("audio",)), ValueError, "audio"),
        (dict(source="clipguide-tiny", pretrained=None, dtype="fp8"), ValueError, "fp8"),
        (dict(source=12345), TypeError, "int"),
    ],
)
def test_bad_inputs_get_clear_errors(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        load_clip(**kwargs)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    os.remove(tmp_path / "open_clip_config.json")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_clip(str(tmp_path))


def test_text_only_transformers_model_object_is_not_a_source():
    with pytest.raises(TypeError, match="CLIPTextModelWithProjection"):
        load_clip(CLIPTextModelWithProjection.__new__(CLIPTextModelWithProjection))


def test_file_weights_default_to_fp32_whatever_they_were_stored_in(oc, tmp_path):
    save_file({k: v.half() for k, v in oc.state_dict().items()}, tmp_path / "w16.safetensors")
    clip = load_clip("clipguide-tiny", pretrained=str(tmp_path / "w16.safetensors"))
    assert clip.dtype == torch.float32
    assert (
        load_clip(
            "clipguide-tiny", pretrained=str(tmp_path / "w16.safetensors"), dtype="fp16"
        ).dtype
        == torch.float16
    )


def test_loaded_towers_are_frozen_but_pass_gradients(oc_dir):
    clip = load_clip(f"local-dir:{oc_dir}")
    assert not any(p.requires_grad for p in clip.text_model.parameters())
    assert not any(p.requires_grad for p in clip.vision_model.parameters())
    assert not clip.encode_text("a red circle").embeds.requires_grad
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    clip.encode_image(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
