"""``clipguide generate`` on diffusers folders as a user's SDXL / SD 1.5 model would be
(issue 20 items 1, 3-6 and 8, issue 21 item 7): one prompt through encode_prompt, the options
diffusers users expect, PNG metadata, file names that do not collide, and guide CLIPs that
fit the pipeline or fail before sampling."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import clipguide
from clipguide.cli import main
from clipguide.testing import tiny_sd_pipeline, tiny_sdxl_pipeline

PROMPT = "a (red fox:1.3) in the snow BREAK " + ", ".join(f"detail {i}" for i in range(40))
NEGATIVE = "(blurry:1.2), dark"
FAST = ["--steps", "2", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    tiny_sdxl_pipeline(seed=7).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd15_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-sd15"
    tiny_sd_pipeline(seed=7).save_pretrained(folder)
    return folder


def _load(folder):
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def _run(pipe, seed=0, **kwargs):
    generator = [torch.Generator("cpu").manual_seed(seed)]
    out = pipe(num_inference_steps=2, guidance_scale=7.0, generator=generator, **kwargs)
    return np.asarray(out.images[0], dtype=np.int16)


def _only(folder, pattern="*.png"):
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_a_diffusers_folder_is_conditioned_through_encode_prompt(sdxl_folder, tmp_path):
    """Weights, BREAK, >77 tokens and the negative prompt reach the UNet as encode_prompt
    makes them: the CLI's image is the library's, not the stock pipeline's reading."""
    out = tmp_path / "out"
    argv = ["generate", PROMPT, "--negative-prompt", NEGATIVE, "--model", str(sdxl_folder)]
    # the plain prompt is past the CLIP's context: scoring says it truncated (generation does not)
    with pytest.warns(UserWarning, match="truncated keeping the end token"):
        assert main([*argv, "--out", str(out), *FAST, "--score-with", "shapes"]) == 0
    png = _only(out)
    pipe = _load(sdxl_folder)
    expected = _run(pipe, **clipguide.encode_prompt(pipe, PROMPT, NEGATIVE))
    assert np.array_equal(_pixels(png), expected)
    assert not np.array_equal(expected, _run(pipe, prompt=PROMPT, negative_prompt=NEGATIVE))
    # the sidecar's score compares the image with the plain text
    meta = json.loads(png.with_suffix(".json").read_text())
    scorer = clipguide.CLIPScorer(clipguide.load_clip("shapes"), progress=False)
    plain = meta["plain_prompt"]
    assert "(" not in plain and "BREAK" not in plain and plain.startswith("a red fox in the snow")
    with pytest.warns(UserWarning, match="truncated keeping the end token"):  # > 77 tokens
        expected_score = float(scorer.score([Image.open(png)], plain)[0])
    assert meta["scores"]["shapes"] == pytest.approx(expected_score, abs=1e-3)
    assert meta["negative_prompt"] == NEGATIVE


def test_best_of_and_guidance_on_a_folder_take_the_conditioning(sdxl_folder, tmp_path):
    """Best-of-N samples from encode_prompt's embeddings (without forwarding the prompt too:
    diffusers' 'Cannot forward both prompt and prompt_embeds') and guidance takes its target
    from the Conditioning (not 'has no target'), with a vision tower that fits the
    pipeline's text tower (its own CLIP, saved as an open_clip folder)."""
    from clipguide.testing import save_openclip_dir, tiny_openclip_model

    vision = save_openclip_dir(tiny_openclip_model(7), tmp_path / "clip")
    prompt = "a (red circle:1.4)"
    argv = ["generate", prompt, "--model", str(sdxl_folder), *FAST, "--best-of", "2"]
    argv += ["--method", "clipscore", "--guide-clip", f"local-dir:{vision}", "--seed", "4"]
    assert main([*argv, "--out", str(tmp_path / "best")]) == 0
    meta = json.loads(_only(tmp_path / "best", "*.json").read_text())
    assert sorted(meta["best_of"]["candidate_seeds"]) == [4, 5]
    pipe = _load(sdxl_folder)
    generator = [torch.Generator("cpu").manual_seed(s) for s in (4, 5)]
    out = pipe(**clipguide.encode_prompt(pipe, prompt), num_images_per_prompt=2,
               num_inference_steps=2, guidance_scale=7.0, generator=generator)  # fmt: skip
    chosen = np.asarray(out.images[meta["seed"] - 4], dtype=np.int16)
    assert np.abs(_pixels(_only(tmp_path / "best")) - chosen).max() <= 1
    guided = tmp_path / "guided"
    assert (
        main([*argv, "--clip-guidance", "2", "--guide-decoder", "vae", "--out", str(guided)]) == 0
    )
    assert json.loads(_only(guided, "*.json").read_text())["clip_guidance"]["scale"] == 2.0


def test_a_guide_clip_that_does_not_fit_fails_at_assembly(sdxl_folder, tmp_path, capsys):
    pipe = tiny_sdxl_pipeline(seed=7)
    with pytest.raises(ValueError, match=r"vision='shapes' gives 64-dim .* 32-dim"):
        clipguide.load_clip(pipe, vision="shapes")
    argv = ["generate", "a red circle", "--model", str(sdxl_folder), *FAST, "--best-of", "2"]
    capsys.readouterr()
    assert main([*argv, "--guide-clip", "shapes", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "--guide-clip shapes" in err and "64" in err and "32" in err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err
    assert not list((tmp_path / "x").glob("*.png")) if (tmp_path / "x").exists() else True


def test_sd15_best_of_needs_and_takes_a_standalone_guide_clip(sd15_folder, tmp_path, capsys):
    argv = ["generate", "a red circle", "--model", str(sd15_folder), *FAST, "--best-of", "2"]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--guide-clip" in err and "--best-of 2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())
    out = tmp_path / "picked"
    assert main([*argv, "--guide-clip", "shapes", "--method", "clipscore", "--out", str(out)]) == 0
    meta = json.loads(_only(out, "*.json").read_text())
    assert meta["best_of"]["judge"] == "shapes" and len(meta["best_of"]["candidate_seeds"]) == 2
    # and guidance with it
    guided = tmp_path / "guided"
    assert main([*argv[:-2], "--best-of", "1", "--clip-guidance", "2", "--guide-decoder", "vae",
                 "--guide-clip", "shapes", "--out", str(guided)]) == 0  # fmt: skip
    assert json.loads(_only(guided, "*.json").read_text())["clip_guidance"]["scale"] == 2.0


def test_size_scheduler_karras_and_png_parameters(sdxl_folder, tmp_path):
    out = tmp_path / "out"
    argv = ["generate", "a (red fox:1.3)", "--negative-prompt", "blurry", "--model"]
    argv += [str(sdxl_folder), *FAST, "--width", "24", "--height", "16", "--seed", "5"]
    assert main([*argv, "--scheduler", "dpm++2m", "--karras", "--out", str(out)]) == 0
    png = _only(out)
    image = Image.open(png)
    assert image.size == (24, 16)
    meta = json.loads(png.with_suffix(".json").read_text())
    assert meta["scheduler"] == "DPMSolverMultistepScheduler" and meta["karras"] is True
    assert meta["dtype"] == "float32"
    lines = image.text["parameters"].splitlines()
    assert lines[0] == "a (red fox:1.3)" and lines[1] == "Negative prompt: blurry"
    fields = dict(part.split(": ", 1) for part in lines[2].split(", "))
    assert fields["Steps"] == "2" and fields["Sampler"] == "DPM++ 2M"
    assert fields["Schedule type"] == "Karras" and fields["CFG scale"] == "7"
    assert fields["Seed"] == "5" and fields["Size"] == "24x16"
    assert fields["Model"] == "tiny-sdxl"  # a folder or file by its name, as A1111 does
    # the same image as the named scheduler with Karras sigmas
    same = tmp_path / "named"
    assert main([*argv, "--scheduler", "dpm++2m-karras", "--out", str(same)]) == 0
    assert np.array_equal(_pixels(png), _pixels(_only(same)))


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--size", "16", "--width", "24"], "--size 16 and --width 24"),
        (["--width", "20"], "multiple of 8"),
        (["--scheduler", "ddim", "--karras"], "--karras: --scheduler ddim has no Karras sigmas"),
        (["--model", "{sdxl}", "--lora", "no/such/lora.safetensors"], "not an existing file"),
        (["--model", "{sdxl}", "--config", "."], "is for a single-file --model"),
        (["--model", "shapes", "--dtype", "fp16"], "--dtype fp16 is for diffusers models"),
        (["--model", "shapes", "--lora", "x.safetensors"], "--lora x.safetensors is for diffusers"),
    ],
)
def test_bad_generate_options_are_refused_before_loading(
    extra, named, sdxl_folder, tmp_path, capsys
):
    extra = [str(sdxl_folder) if e == "{sdxl}" else e for e in extra]
    argv = ["generate", "a red circle", "--out", str(tmp_path / "o"), *FAST, *extra]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "unrecognized" not in err and not (tmp_path / "o").exists()


def test_an_empty_prompt_is_an_argument_error(tmp_path, capsys):
    for prompt in ("", "  ", "(())"):
        capsys.readouterr()
        assert main(["generate", prompt, "--out", str(tmp_path / "o"), *FAST]) == 2
        err = capsys.readouterr().err
        assert "prompt" in err and "internal error" not in err and len(err.splitlines()) == 1


def test_variant_and_lora(sdxl_folder, tmp_path):
    from safetensors.torch import save_file

    variant = tmp_path / "variant"
    tiny_sdxl_pipeline(seed=7).save_pretrained(variant, variant="fp16")
    argv = ["generate", "a red fox", *FAST, "--seed", "3"]
    assert (
        main([*argv, "--model", str(variant), "--out", str(tmp_path / "v")]) == 1
    )  # no plain files
    assert (
        main([*argv, "--model", str(variant), "--variant", "fp16", "--out", str(tmp_path / "v")])
        == 0
    )
    plain = _pixels(_only(tmp_path / "v"))
    # a UNet LoRA (random A and B) as a diffusers-format file
    pipe = _load(sdxl_folder)
    gen = torch.Generator().manual_seed(0)
    lora = {}
    for name, module in pipe.unet.named_modules():
        if name.endswith(("attn2.to_q", "attn2.to_v", "attn1.to_k")):
            lora[f"unet.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=gen)
            lora[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=gen)
    path = tmp_path / "lora.safetensors"
    save_file(lora, str(path))
    base = [*argv, "--model", str(sdxl_folder)]
    assert main([*base, "--out", str(tmp_path / "l0")]) == 0
    assert main([*base, "--lora", f"{path}:0", "--out", str(tmp_path / "lz")]) == 0
    assert main([*base, "--lora", f"{path}:0.8", "--out", str(tmp_path / "l8")]) == 0
    none, zero, some = (_pixels(_only(tmp_path / d)) for d in ("l0", "lz", "l8"))
    assert np.array_equal(none, plain) and np.array_equal(none, zero)
    assert not np.array_equal(none, some)
    meta = json.loads(_only(tmp_path / "l8", "*.json").read_text())
    assert meta["loras"] == [[str(path), 0.8]]
    assert "LoRA: " in Image.open(_only(tmp_path / "l8")).text["parameters"]


def test_a_single_file_needs_a_local_config_offline(sdxl_folder, tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.out.2.bias": torch.zeros(4)}, str(checkpoint))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [
        "generate",
        "a red fox",
        *FAST,
        "--model",
        str(checkpoint),
        "--out",
        str(tmp_path / "o"),
    ]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--config" in err and "single-file" in err and len(err.strip().splitlines()) == 1
    # with a local config diffusers reads it (this file is no real checkpoint: one clear line)
    assert main([*argv, "--config", str(sdxl_folder)]) == 1
    err = capsys.readouterr().err
    assert f"--model {str(checkpoint)!r}" in err and "internal error" not in err


def test_prompts_that_differ_past_the_slug_do_not_collide(tmp_path):
    out = tmp_path / "out"
    stem = "a red circle above a blue square and a green triangle on a white floor"
    base = ["--out", str(out), "--steps", "2", "--no-progress", "--best-of", "1"]
    for end in ("at dawn", "at dusk"):
        assert main(["generate", f"{stem} {end}", *base]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and {json.loads(p.with_suffix(".json").read_text())["prompt"]
                               for p in pngs} == {f"{stem} at dawn", f"{stem} at dusk"}  # fmt: skip
    assert all(p.name.endswith("-0.png") for p in pngs)  # the seed ends the name
    assert main(["generate", f"{stem} at dawn", *base]) == 0  # the same command: the same file
    assert sorted(out.glob("*.png")) == pngs


def test_options_without_effect_are_named(tmp_path, caplog):
    argv = ["generate", "a red circle", "--out", str(tmp_path), "--steps", "1", "--no-progress"]
    argv += ["--best-of", "1", "--method", "clipscore", "--clip-guidance-mode", "full"]
    argv += ["--region-place", "0.5"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    text = caplog.text
    assert "--method clipscore has no effect" in text
    assert "--clip-guidance-mode full has no effect" in text
    assert "--region-place 0.5 has no effect without --region" in text


def test_seed_help_says_how_best_of_names_files(capsys):
    """--seed's help said "(then +1, ...)", but best-of-N names each file after the seed of
    the candidate it kept (seed + i*N ... seed + i*N + N-1)."""
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(then +1, ...)" not in help_text
    assert "seed + i*N" in help_text and "chosen candidate's seed" in help_text


def test_dtype_defaults_to_fp16_on_cuda_and_can_be_named(sdxl_folder, tmp_path):
    from clipguide.cli.pipelines import resolve_dtype

    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("auto", "cuda:1") == torch.float16
    assert resolve_dtype("auto", "cpu") == torch.float32
    out = tmp_path / "bf16"
    argv = ["generate", "a red fox", "--model", str(sdxl_folder), *FAST, "--dtype", "bf16"]
    assert main([*argv, "--out", str(out)]) == 0
    meta = json.loads(_only(out, "*.json").read_text())
    assert meta["dtype"] == "bfloat16" and "Dtype: bfloat16" in Image.open(_only(out)).text[
        "parameters"]  # fmt: skip
