"""Exact open_clip <-> transformers conversion, on tiny random models and on bigG's shapes."""

import open_clip
import torch
from accelerate import init_empty_weights
from open_clip.model import CLIP as OpenCLIPModel
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from clipguide.model.convert import (
    clip_config_from_openclip,
    openclip_config_from_transformers,
    openclip_to_transformers,
    text_config_from_openclip,
    transformers_to_openclip,
    vision_config_from_openclip,
)
from clipguide.testing import tiny_openclip_model

TOL = 1e-5


def _penultimate_openclip(model, ids):
    """open_clip's own forward, stopped after the penultimate residual block."""
    x = model.token_embedding(ids) + model.positional_embedding
    for block in model.transformer.resblocks[:-1]:
        x = block(x, attn_mask=model.attn_mask)
    return x


def test_tiny_openclip_to_transformers_is_exact():
    oc = tiny_openclip_model(seed=3)
    cfg = open_clip.get_model_config("clipguide-tiny")
    hf = CLIPModel(clip_config_from_openclip(cfg)).eval()
    missing, unexpected = hf.load_state_dict(
        openclip_to_transformers(oc.state_dict()), strict=False
    )
    assert not unexpected and all("position_ids" in k for k in missing)
    ids = open_clip.get_tokenizer("ViT-bigG-14")(
        ["a red circle", "two blue squares left of it", ""]
    )
    img = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = hf.text_model(input_ids=ids, output_hidden_states=True)
        assert (out.hidden_states[-2] - _penultimate_openclip(oc, ids)).abs().max() <= TOL
        pooled = hf.text_projection(out.pooler_output)
        assert (pooled - oc.encode_text(ids)).abs().max() <= TOL
        vis = hf.visual_projection(hf.vision_model(pixel_values=img).pooler_output)
        assert (vis - oc.encode_image(img)).abs().max() <= TOL


def test_round_trip_is_lossless_both_ways():
    oc = tiny_openclip_model(seed=4)
    sd = oc.state_dict()
    back = transformers_to_openclip(openclip_to_transformers(sd))
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    cfg = open_clip.get_model_config("clipguide-tiny")
    hf = CLIPModel(clip_config_from_openclip(cfg))
    hsd = hf.state_dict()
    again = openclip_to_transformers(transformers_to_openclip(hsd))
    assert all(torch.equal(again[k], hsd[k]) for k in again)
    # and the transformers model converted to open_clip layout computes the same thing
    rebuilt = OpenCLIPModel(
        **openclip_config_from_transformers(hf.config.text_config, hf.config.vision_config)
    ).eval()
    rebuilt.load_state_dict(transformers_to_openclip(hsd))
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf.visual_projection(hf.vision_model(pixel_values=img).pooler_output)
        assert (rebuilt.encode_image(img) - ref).abs().max() <= TOL


def test_bigg_architecture_maps_every_key_and_shape():
    cfg = open_clip.get_model_config("ViT-bigG-14")
    with torch.device("meta"):
        oc = OpenCLIPModel(**cfg)
    sd = oc.state_dict()
    with init_empty_weights():
        text = CLIPTextModelWithProjection(text_config_from_openclip(cfg))
        vision = CLIPVisionModelWithProjection(vision_config_from_openclip(cfg))
    assert sum(p.numel() for p in text.parameters()) == 694_659_840
    assert sum(p.numel() for p in vision.parameters()) == 1_844_907_264
    n_vis = sum(v.numel() for k, v in sd.items() if k.startswith("visual."))
    n_txt = sum(
        v.numel() for k, v in sd.items() if not k.startswith("visual.") and k != "logit_scale"
    )
    assert (n_txt, n_vis) == (694_659_840, 1_844_907_264)
    ours = {**text.state_dict(), **vision.state_dict()}
    mapped = openclip_to_transformers(sd)
    mapped.pop("logit_scale")
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)
    back = transformers_to_openclip(mapped)
    assert set(back) == set(sd)
    assert all(back[k].shape == sd[k].shape for k in sd)


def test_unsupported_open_clip_option_is_refused():
    cfg = open_clip.get_model_config("clipguide-tiny")
    cfg["vision_cfg"]["attentional_pool"] = True
    try:
        vision_config_from_openclip(cfg)
    except ValueError as err:
        assert "attentional_pool" in str(err) and "True" in str(err)
    else:
        raise AssertionError("attentional_pool=True should be refused")
