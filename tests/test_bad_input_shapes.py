"""Bad input to the micro world's public surface: each error names the argument and the value.

Every case gives the call, the exception type it must raise, and the pieces of text its
message must hold (the argument's name and the value received). Train CLI errors exit through
argparse (SystemExit 2) with the message on stderr.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from clipguide.shapes import (
    check,
    detect,
    load_shapes_clip,
    load_tiny_decoder,
    make_scheduler,
    parse_caption,
    pipeline,
    prompt_set,
    render,
    sample_scene,
)
from clipguide.shapes.training import main as train_main

SCENE = sample_scene(11, "color_attr")


def _with_object(**change):
    return replace(SCENE, objects=(replace(SCENE.objects[0], **change),) + SCENE.objects[1:])


CASES = {
    # scenes
    "seed_str": (lambda: sample_scene("abc"), TypeError, ["seed", "'abc'"]),
    "seed_float": (lambda: sample_scene(1.5), TypeError, ["seed", "1.5"]),
    "seed_bool": (lambda: sample_scene(True), TypeError, ["seed", "True"]),
    "seed_negative": (lambda: sample_scene(-1), ValueError, ["seed", "-1"]),
    "family_unknown": (lambda: sample_scene(3, "nope"), ValueError, ["family", "'nope'"]),
    "n_per_family_zero": (lambda: prompt_set(0), ValueError, ["n_per_family", "0"]),
    "n_per_family_str": (lambda: prompt_set("3"), TypeError, ["n_per_family", "'3'"]),
    "prompt_set_seed": (lambda: prompt_set(2, seed=-5), ValueError, ["seed", "-5"]),
    "families_str": (lambda: prompt_set(2, families="colors"), TypeError, ["families", "colors"]),
    "families_unknown": (
        lambda: prompt_set(2, families=["colors", "shapes"]),
        ValueError,
        ["families[1]", "'shapes'"],
    ),
    "caption_none": (lambda: parse_caption(None), TypeError, ["caption", "None"]),
    "caption_empty": (lambda: parse_caption(""), ValueError, ["caption=''", "empty"]),
    "caption_shape": (lambda: parse_caption("a red hexagon"), ValueError, ["caption", "hexagon"]),
    "caption_colour": (lambda: parse_caption("a pink circle"), ValueError, ["caption", "pink"]),
    "caption_number": (lambda: parse_caption("five circles"), ValueError, ["caption", "five"]),
    "caption_dangling": (
        lambda: parse_caption("a circle above"),
        ValueError,
        ["caption='a circle above'", "empty"],
    ),
    "caption_three_groups": (
        lambda: parse_caption("a circle and a square and a triangle"),
        ValueError,
        ["caption", "at most two"],
    ),
    "caption_two_relations": (
        lambda: parse_caption("a circle left of a square above a triangle"),
        ValueError,
        ["caption", "at most one relation", "left of", "above"],
    ),
    "render_not_scene": (lambda: render("scene"), TypeError, ["scene", "'scene'"]),
    "render_colour": (
        lambda: render(_with_object(colour="pink")),
        ValueError,
        ["scene.objects[0].colour", "'pink'"],
    ),
    "render_shape": (
        lambda: render(_with_object(shape="hexagon")),
        ValueError,
        ["scene.objects[0].shape", "'hexagon'"],
    ),
    # oracle
    "image_2d": (lambda: detect(np.zeros((64, 64))), ValueError, ["image", "(64, 64)"]),
    "image_rgba": (
        lambda: detect(np.zeros((64, 64, 4), np.uint8)),
        ValueError,
        ["image", "(64, 64, 4)"],
    ),
    "image_batch": (
        lambda: detect(torch.zeros(1, 3, 64, 64)),
        ValueError,
        ["image", "(1, 3, 64, 64)"],
    ),
    "image_int64": (
        lambda: detect(np.zeros((64, 64, 3), np.int64)),
        TypeError,
        ["image", "int64"],
    ),
    "image_float_0_255": (
        lambda: detect(np.full((64, 64, 3), 200.0)),
        ValueError,
        ["image", "200"],
    ),
    "image_minus_one": (
        lambda: detect(torch.full((3, 64, 64), -1.0)),
        ValueError,
        ["image", "[-1"],
    ),
    "image_nan": (lambda: detect(np.full((64, 64, 3), np.nan)), ValueError, ["image", "NaN"]),
    "image_size": (
        lambda: detect(np.zeros((128, 128, 3), np.uint8)),
        ValueError,
        ["image", "(128, 128, 3)"],
    ),
    "image_path": (lambda: detect("img.png"), TypeError, ["image", "str"]),
    "check_prompt": (lambda: check(render(SCENE), 3), TypeError, ["prompt", "3"]),
    "check_grammar": (
        lambda: check(render(SCENE), "a red hexagon"),
        ValueError,
        ["caption", "hexagon"],
    ),
    # shipped models
    "scheduler_name": (lambda: make_scheduler("nope"), ValueError, ["scheduler", "'nope'"]),
    "scheduler_type": (lambda: make_scheduler(42), TypeError, ["scheduler", "42"]),
    "scheduler_config": (
        lambda: make_scheduler(config="x"),
        TypeError,
        ["config", "'x'"],
    ),
    "pipeline_scheduler": (lambda: pipeline(scheduler="nope"), ValueError, ["scheduler", "nope"]),
    "pipeline_dtype": (lambda: pipeline(dtype="float16"), TypeError, ["dtype", "'float16'"]),
    "pipeline_device": (lambda: pipeline(device="nodevice"), ValueError, ["device", "nodevice"]),
    "decoder_dtype": (
        lambda: load_tiny_decoder(dtype=torch.int8),
        ValueError,
        ["dtype", "torch.int8"],
    ),
    "decoder_device": (lambda: load_tiny_decoder(device="gpu0"), ValueError, ["device", "gpu0"]),
    "clip_name": (lambda: load_shapes_clip("nope"), ValueError, ["name", "'nope'"]),
    # train CLI
    "train_stage": (lambda: train_main(["nope"]), SystemExit, ["stage", "'nope'"]),
    "train_steps_zero": (lambda: train_main(["vae", "--steps", "0"]), SystemExit, ["--steps", "0"]),
    "train_steps_text": (
        lambda: train_main(["vae", "--steps", "abc"]),
        SystemExit,
        ["--steps", "'abc'"],
    ),
    "train_batch": (lambda: train_main(["vae", "--batch", "-1"]), SystemExit, ["--batch", "-1"]),
    "train_lr": (lambda: train_main(["vae", "--lr", "0"]), SystemExit, ["--lr", "0.0"]),
    "train_lr_nan": (lambda: train_main(["vae", "--lr", "nan"]), SystemExit, ["--lr", "nan"]),
    "train_pool": (lambda: train_main(["vae", "--pool", "0"]), SystemExit, ["--pool", "0"]),
    "train_threads": (
        lambda: train_main(["vae", "--threads", "0"]),
        SystemExit,
        ["--threads", "0"],
    ),
    "train_init_from": (
        lambda: train_main(["clip", "--init-from", "/nonexistent/run"]),
        SystemExit,
        ["--init-from", "/nonexistent/run"],
    ),
    "train_vae_folder": (
        lambda: train_main(["unet", "--vae", "/nonexistent/vae"]),
        SystemExit,
        ["--vae", "/nonexistent/vae"],
    ),
    "train_grad_weight": (
        lambda: train_main(["decoder", "--grad-weight", "-1"]),
        SystemExit,
        ["--grad-weight", "-1.0"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_names_argument_and_value(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a train run that wrongly started would write here
    call, exc, needles = CASES[name]
    with pytest.raises(exc) as info:
        call()
    message = capsys.readouterr().err if exc is SystemExit else str(info.value)
    if exc is SystemExit:
        assert info.value.code == 2
    for needle in needles:
        assert needle in message, (needle, message)
    assert not list(tmp_path.iterdir())  # nothing was built before the check
