"""One prompt all the way through (issue 20, item 2): a Conditioning knows its plain prompt,
so guidance attached to a pipeline called with ``**encode_prompt(...)`` takes its target from
it, ``best_of_n`` takes the embeddings, and scoring reads prompts as prompts."""

from __future__ import annotations

import pytest
import torch

import clipguide
from clipguide.guidance import CLIPGuidance
from clipguide.scoring import CLIPScorer, best_of_n
from clipguide.testing import tiny_clip, tiny_sdxl_pipeline

RUN = dict(num_inference_steps=2, guidance_scale=5.0, output_type="pt")


@pytest.fixture(scope="module")
def pipe():
    built = tiny_sdxl_pipeline()
    built.set_progress_bar_config(disable=True)
    return built


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(seed=5)


def test_a_conditioning_knows_its_plain_prompt_per_row_and_passes_embeddings_only(pipe):
    cond = clipguide.encode_prompt(
        pipe, ["a (red fox:1.3) BREAK at dawn", "[a cat]"], "(blurry:1.2)", num_images_per_prompt=2
    )
    assert cond.prompt == ("a red fox at dawn",) * 2 + ("a cat",) * 2
    assert cond.negative_prompt == ("blurry",) * 4
    assert set(cond) == {
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    }
    from clipguide.conditioning.carried import prompt_of

    assert prompt_of(cond["prompt_embeds"]) == cond.prompt
    assert cond.to(dtype=torch.float16).prompt == cond.prompt
    zeros = clipguide.encode_prompt(pipe, "a fox", force_zeros_for_empty_prompt=True)
    assert zeros.negative_prompt is None and zeros.prompt == ("a fox",)


def test_guidance_takes_its_target_from_the_conditioning(pipe, clip):
    cond = clipguide.encode_prompt(pipe, "a (red circle:1.3)")
    guidance = CLIPGuidance(clip, scale=50.0, record=True)
    with guidance.attach(pipe):  # was: "CLIPGuidance has no target"
        guided = pipe(**cond, generator=torch.Generator().manual_seed(0), **RUN).images
    # the same as guiding toward the plain text, named explicitly
    named = CLIPGuidance(clip, scale=50.0, target="a red circle")
    with named.attach(pipe):
        expected = pipe(**cond, generator=torch.Generator().manual_seed(0), **RUN).images
    assert torch.equal(guided, expected)
    assert guidance.history  # the run was guided


def test_best_of_n_takes_the_embeddings_and_scores_the_plain_prompt(pipe, clip):
    scorer = CLIPScorer(clip, progress=False)
    cond = clipguide.encode_prompt(pipe, "a (red circle:1.3)")
    # was: diffusers' "Cannot forward both `prompt` and `prompt_embeds`" with a whole tensor
    result = best_of_n(pipe, "a (red circle:1.3)", 2, scorer, seed=3, progress=False, **cond, **RUN)
    assert len(result.images) == 2 and sorted(result.seeds) == [3, 4]
    images = torch.stack(list(result.images))
    assert torch.allclose(result.scores, scorer.score(images, "a red circle"), atol=1e-4)
    # the Conditioning alone carries its text
    alone = best_of_n(pipe, cond, 2, scorer, seed=3, progress=False, **RUN)
    assert alone.prompt == "a red circle" and alone.seeds == result.seeds
    assert torch.equal(torch.stack(list(alone.images)), images)


def test_best_of_n_errors_never_print_a_tensor(pipe, clip):
    scorer = CLIPScorer(clip, progress=False)
    cond = clipguide.encode_prompt(pipe, "a red circle")
    with pytest.raises(ValueError) as err:
        best_of_n(pipe, "a red", 2, scorer, num_images_per_prompt=cond["prompt_embeds"])
    assert "tensor(" not in str(err.value) and len(str(err.value)) < 300
    rows = clipguide.encode_prompt(pipe, "a red circle", num_images_per_prompt=2)
    with pytest.raises(ValueError, match="Conditioning of one prompt"):
        best_of_n(pipe, rows, 2, scorer)


def test_scorer_reads_prompt_syntax_as_the_plain_prompt(clip):
    scorer = CLIPScorer(clip, progress=False)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain = scorer.score(images, "a red circle above a blue square")
    for written in (
        "a (red circle:1.3) above a [blue] square",
        "((a red circle)) above a blue square <lora:detail:0.8>",
    ):
        assert torch.allclose(scorer.score(images, written), plain, atol=1e-5), written
    assert torch.allclose(  # BREAK reads as a comma
        scorer.score(images, "a red circle BREAK above"),
        scorer.score(images, "a red circle, above"),
        atol=1e-5,
    )
    assert torch.allclose(
        scorer.matrix(images, ["(a red circle above a blue square:1.2)"])[:, 0],
        scorer.cosine(images, "a red circle above a blue square"),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("prompt", "named"),
    [
        ("<lora:detail:0.8> a red fox", "LoRA tag"),
        ("a red fox++ in snow", "compel"),
        ("a (red fox)-- in snow", "compel"),
    ],
)
def test_lora_tags_and_compel_weights_are_not_read_silently(prompt, named):
    from clipguide.conditioning import PromptSyntaxWarning, parse_prompt

    with pytest.warns(PromptSyntaxWarning, match=named):
        parse_prompt(prompt)
    with pytest.raises(ValueError, match=named.split()[0]):
        parse_prompt(prompt, strict=True)


def test_prompt_2_goes_to_the_second_text_encoder_only(pipe):
    """As SDXL pipelines read prompt_2: CLIP-L sees prompt, bigG (tokenizer_2) sees prompt_2."""
    one = clipguide.encode_prompt(pipe, "a red fox", "blurry")
    two = clipguide.encode_prompt(
        pipe, "a red fox", "blurry", prompt_2="a fox, oil painting", negative_prompt_2="dark"
    )
    width = pipe.text_encoder.config.hidden_size
    embeds, neg = "prompt_embeds", "negative_prompt_embeds"
    assert torch.equal(one[embeds][..., :width], two[embeds][..., :width])
    assert not torch.allclose(one[embeds][..., width:], two[embeds][..., width:])
    assert not torch.allclose(one[neg][..., width:], two[neg][..., width:])
    bigg = clipguide.encode_prompt(pipe, "a fox, oil painting", "dark")
    assert torch.equal(two[embeds][..., width:], bigg[embeds][..., width:])
    assert torch.equal(two["pooled_prompt_embeds"], bigg["pooled_prompt_embeds"])
    with pytest.raises(ValueError, match="negative_prompt_2 needs negative_prompt"):
        clipguide.encode_prompt(pipe, "a", negative_prompt_2="b")


def test_the_ray_engine_scores_the_plain_prompt_as_the_local_one_does():
    """Both engines read prompts as prompts (the local one through CLIPScorer.cosine)."""
    import numpy as np

    from clipguide.distributed.ray_score import ImageScorer

    clip = clipguide.load_clip("shapes")
    actor = ImageScorer("shapes", None, None, 100.0, clip.preprocess)
    size = clip.preprocess.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, size, size), dtype=np.uint8)
    written = actor._cosines(pixels, ["a (red circle:1.3)", "((a blue square)) BREAK"])
    plain = actor._cosines(pixels, ["a red circle", "a blue square"])
    assert torch.allclose(written, plain, atol=1e-6)
