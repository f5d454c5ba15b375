"""Bad input for regions: one clear error, naming the argument and the value, before sampling."""

from __future__ import annotations

import math

import pytest
import torch

from clipguide.conditioning import Region, RegionalPrompt, parse_region
from clipguide.conditioning.regions import check_regions
from clipguide.testing import tiny_sd_pipeline

BOX = (0.0, 0.0, 0.5, 1.0)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(prompt="", box=BOX), ValueError, r"prompt='' .*non-empty string"),
        (dict(prompt="   ", box=BOX), ValueError, r"prompt='   ' .*non-empty string"),
        (dict(prompt=None, box=BOX), ValueError, r"prompt=None .*non-empty string"),
        (dict(prompt="a", box=(0, 0, 1.5, 1)), ValueError, r"box=\(0, 0, 1.5, 1\).*inside"),
        (dict(prompt="a", box=(-0.1, 0, 1, 1)), ValueError, r"box=\(-0.1, 0, 1, 1\).*\[0, 1\]"),
        (dict(prompt="a", box=(0.5, 0, 0.5, 1)), ValueError, r"box=\(0.5, 0, 0.5, 1\).*empty"),
        (dict(prompt="a", box=(0, 0.6, 1, 0.2)), ValueError, r"box=\(0, 0.6, 1, 0.2\).*y0 < y1"),
        (dict(prompt="a", box=(0, 0, 1)), ValueError, r"box=\(0, 0, 1\).*4 numbers"),
        (dict(prompt="a", box=(0, 0, math.nan, 1)), ValueError, r"box=\(0, 0, nan, 1\)"),
        (dict(prompt="a"), ValueError, r"box=None and mask=None.*exactly one"),
        (
            dict(prompt="a", box=BOX, mask=torch.ones(4, 4)),
            ValueError,
            r"box=\(0.0, 0.0, 0.5, 1.0\) and mask=tensor\(shape=\(4, 4\).*exactly one",
        ),
        (dict(prompt="a", mask=torch.ones(4)), ValueError, r"mask=tensor\(shape=\(4,\).*\(H, W\)"),
        (dict(prompt="a", mask=2 * torch.ones(4, 4)), ValueError, r"mask=tensor.*\[0, 1\]"),
        (dict(prompt="a", mask=torch.zeros(4, 4)), ValueError, r"mask=tensor.*empty"),
        (dict(prompt="a", box=BOX, weight=-1), ValueError, r"weight=-1 .*>= 0"),
        (dict(prompt="a", box=BOX, weight=math.inf), ValueError, r"weight=inf .*finite"),
        (dict(prompt="a", box=BOX, start=1.0), ValueError, r"start=1.0 .*0 <= start < 1"),
        (dict(prompt="a", box=BOX, start=0.5, stop=0.5), ValueError, r"stop=0.5 .*start \(0.5\)"),
        (dict(prompt="a", box=BOX, stop=1.2), ValueError, r"stop=1.2 .*stop <= 1"),
    ],
)
def test_region_is_validated_at_construction(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Region(**kwargs)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("0,0,0.5,1 a red fox", r"region='0,0,0.5,1 a red fox'.*no ':'"),
        ("0,0,0.5:a red fox", r"region='0,0,0.5:a red fox'.*'0,0,0.5' is not 4 numbers"),
        ("0,0,x,1:a red fox", r"region='0,0,x,1:a red fox'.*box value 'x' is not a number"),
        ("0,0,1.5,1:a red fox", r"region='0,0,1.5,1:a red fox'.*box=\(0.0, 0.0, 1.5, 1.0\)"),
        ("0,0,0.5,1:", r"region='0,0,0.5,1:'.*prompt=''"),
        ("left@-2:a fox", r"region='left@-2:a fox'.*weight=-2.0"),
        ("left@heavy:a fox", r"region='left@heavy:a fox'.*weight 'heavy' is not a number"),
        ("middle:a fox", r"region='middle:a fox'.*named box"),
    ],
)
def test_parse_region_errors_name_the_text_and_what_is_accepted(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        parse_region(text)


def test_parse_region_reads_numbers_weights_and_named_boxes():
    assert parse_region("0,0,0.5,1:a red fox") == Region("a red fox", box=(0, 0, 0.5, 1))
    assert parse_region("0 0.5 1 1 @ 0.8 : a (red:1.2) fox") == Region(
        "a (red:1.2) fox", box=(0, 0.5, 1, 1), weight=0.8
    )
    assert parse_region("top-right:sun").box == (0.5, 0.0, 1.0, 0.5)


def test_lists_name_the_offending_region_by_index():
    with pytest.raises(ValueError, match=r"regions\[1\]: region='0,0,2,1:b'.*box="):
        check_regions([Region("a", box=BOX), "0,0,2,1:b"])
    with pytest.raises(TypeError, match=r"regions\[0\]=3 is not valid"):
        check_regions([3])
    with pytest.raises(TypeError, match=r"regions='left:a' is not valid; accepted: a list"):
        RegionalPrompt("left:a")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(blend=1.5), r"blend=1.5 .*\[0, 1\]"),
        (dict(blend=-0.1), r"blend=-0.1 .*\[0, 1\]"),
        (dict(start=0.7, stop=0.3), r"stop=0.3 .*start \(0.7\) < stop"),
        (dict(stop=math.nan), r"stop=nan"),
    ],
)
def test_regional_prompt_settings(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        RegionalPrompt([], **kwargs)


def _attached_nothing(pipe) -> bool:
    return "_clipguide_hooks" not in vars(pipe) and not any(
        m._forward_hooks or m._forward_pre_hooks for m in pipe.unet.modules()
    )


def test_pipeline_without_cross_attention_is_refused_before_anything_is_installed():
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(ValueError, match=r"pipe=<DDPMPipeline> has no cross-attention layers"):
        RegionalPrompt(["left:a fox"]).attach(pipe)
    assert _attached_nothing(pipe)
    with pytest.raises(TypeError, match=r"pipe='a pipeline' is not supported: regions attach"):
        RegionalPrompt([]).attach("a pipeline")


def test_attaching_twice_is_refused():
    pipe = tiny_sd_pipeline()
    rp = RegionalPrompt(["left:a fox"])
    with rp.attach(pipe):
        with pytest.raises(RuntimeError, match="already attached"):
            rp.attach(pipe)
    assert _attached_nothing(pipe)


def test_settings_are_read_only():
    rp = RegionalPrompt(["left:a fox"], blend=0.2)
    for name in ("regions", "blend", "start", "stop"):
        with pytest.raises(AttributeError):
            setattr(rp, name, getattr(rp, name))
    assert (rp.blend, rp.start, rp.stop) == (0.2, 0.0, 1.0)
