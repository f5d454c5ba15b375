"""Scoring core with a fake CLIP: maths, batching, caching, warnings, ranking, best-of-N."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipguide import best_of_n
from clipguide.model.images import to_tensor
from clipguide.scoring import (
    HESSEL_SCALE,
    CLIPScorer,
    clip_score,
    cosine,
    cosine_matrix,
    rank,
    robust_view,
)
from clipguide.testing import torchmetrics_clipscore

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class FakeCLIP:
    """Embeds an image as its mean RGB and a prompt as counts of the colour words it names."""

    name = "fake"
    context_length = 6
    vocab = {c: i + 1 for i, c in enumerate(COLOURS)}  # 0 pad, 4 other, 5 start, 6 end

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        self.text_calls: list[list[str]] = []
        self.image_batches: list[int] = []

    def tokenizer(self, prompts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[5, *(self.vocab.get(w, 4) for w in p.split()), 6] for p in prompts]}

    def tokenize(self, prompts: list[str], *, warn: bool = True) -> torch.Tensor:
        assert not warn, "the scorer owns the long-prompt warning"
        self.text_calls.append(list(prompts))
        rows = []
        for ids in self.tokenizer(prompts)["input_ids"]:
            ids = ids[: self.context_length - 1] + [6] if len(ids) > self.context_length else ids
            rows.append(ids + [0] * (self.context_length - len(ids)))
        return torch.tensor(rows)

    def encode_text(self, ids: torch.Tensor) -> SimpleNamespace:
        counts = torch.stack([(ids == k).sum(dim=1) for k in self.vocab.values()], dim=1)
        pooled = (counts.float() + 0.01).to(self.dtype)
        return SimpleNamespace(embeds=F.normalize(pooled.float(), dim=-1), pooled=pooled)

    def encode_image(self, images: list[Image.Image | torch.Tensor]) -> torch.Tensor:
        self.image_batches.append(len(images))
        means = torch.stack([to_tensor(i).float().mean(dim=(1, 2)) for i in images]) + 0.01
        return F.normalize(means, dim=-1).to(self.dtype)


def _solid(colour: str, size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new("RGB", size, COLOURS[colour])


def test_cosine_and_matrix_match_torch_in_fp32() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 16, generator=gen).half()
    b = torch.randn(5, 16, generator=gen).half()
    per_pair = cosine(a, b)
    assert per_pair.dtype == torch.float32
    assert torch.allclose(per_pair, F.cosine_similarity(a.float(), b.float()), atol=1e-6)
    m = cosine_matrix(a, b[:3])
    assert m.shape == (5, 3) and m.dtype == torch.float32
    assert torch.allclose(m[:, 1], F.cosine_similarity(a.float(), b[1:2].float()), atol=1e-6)
    assert torch.allclose(cosine(a, b[0]), m[:, 0], atol=1e-6)  # one text broadcast


def test_cosine_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"1 or N=4 rows, got 3"):
        cosine(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"got shapes \(8,\) and \(3, 8\)"):
        cosine_matrix(torch.randn(8), torch.randn(3, 8))


def test_clip_score_clamps_each_sample_not_the_mean() -> None:
    cos = torch.tensor([0.3, -0.5, 0.1])
    assert torch.allclose(clip_score(cos), torch.tensor([30.0, 0.0, 10.0]))
    assert torch.allclose(clip_score(cos, HESSEL_SCALE), torch.tensor([0.75, 0.0, 0.25]))
    # torchmetrics' mean-then-clamp would give max(mean(100 cos), 0) = 0 here.
    assert clip_score(cos).mean() > 0
    with pytest.raises(ValueError, match="scale must be positive.*got -1"):
        clip_score(cos, -1)


def test_rank_is_deterministic_with_ties_and_nan() -> None:
    scores = torch.tensor([0.5, 0.9, float("nan"), 0.5, 0.9, 0.1])
    ranking = rank(scores)
    assert ranking.indices == [1, 4, 0, 3, 5, 2]
    assert torch.equal(ranking.scores[:5], torch.tensor([0.9, 0.9, 0.5, 0.5, 0.1]))
    assert rank(scores.flip(0)).indices == [1, 4, 2, 5, 0, 3]  # 5 - i: ties by lower index
    with pytest.raises(ValueError, match="1-D"):
        rank(torch.zeros(2, 2))


def test_scorer_scores_per_image_with_one_or_many_prompts() -> None:
    scorer = CLIPScorer(FakeCLIP())
    images = [_solid("red"), _solid("green"), _solid("blue")]
    scores = scorer.score(images, "a red thing")
    assert scores.argmax().item() == 0 and scores[0] > 99
    paired = scorer.score(images, ["red", "green", "blue"])
    assert torch.all(paired > 99)
    m = scorer.matrix(images, ["red", "green", "blue", "green"])
    assert m.shape == (3, 4) and m.argmax(dim=1).tolist() == [0, 1, 2]
    assert torch.allclose(torch.diagonal(m[:, :3]), scorer.cosine(images, ["red", "green", "blue"]))
    with pytest.raises(ValueError, match=r"one per image \(3\), got 2"):
        scorer.score(images, ["red", "green"])
    with pytest.raises(TypeError, match="prompts must be a str or a non-empty list of str"):
        scorer.score(images, [])


def test_scorer_batches_and_mixed_inputs_give_identical_results() -> None:
    clip = FakeCLIP()
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    mixed = [
        Image.fromarray(arrays[0]),
        arrays[1],
        torch.from_numpy(arrays[2]).permute(2, 0, 1) / 255.0,
    ]
    mixed += [arrays[3:5]]  # NHWC inside a list
    batched = CLIPScorer(clip, batch_size=2).embed_images(mixed)
    assert clip.image_batches == [2, 2, 1]
    single = CLIPScorer(clip, batch_size=64).embed_images(arrays)
    assert torch.allclose(batched, single, atol=1e-6)


def test_similarity_is_fp32_for_half_models() -> None:
    scorer = CLIPScorer(FakeCLIP(dtype=torch.float16))
    scores = scorer.score([_solid("red")], "red")
    assert scores.dtype == torch.float32


def test_text_embeddings_are_cached_with_lru_eviction() -> None:
    clip = FakeCLIP()
    scorer = CLIPScorer(clip, cache_size=2)
    scorer.embed_texts(["red", "green", "red"])
    assert clip.text_calls == [["red", "green"]]
    scorer.embed_texts("green")
    assert len(clip.text_calls) == 1
    scorer.embed_texts("blue")  # evicts "red" (least recently used)
    scorer.embed_texts(["green", "red"])
    assert clip.text_calls[-1] == ["red"]
    uncached = CLIPScorer(clip, cache_size=0)
    first = uncached.embed_texts("blue")
    second = uncached.embed_texts("blue")
    assert torch.equal(first, second) and clip.text_calls[-2:] == [["blue"], ["blue"]]


def test_long_prompts_warn_once_per_call() -> None:
    scorer = CLIPScorer(FakeCLIP())
    long_a, long_b = "red " * 9, "blue " * 7
    with pytest.warns(UserWarning, match="1 prompt"):
        truncated = scorer.embed_texts([long_a])  # keeps the first 4 words and the end token
    assert torch.allclose(truncated, scorer.embed_texts("red red red red"))
    for _ in range(2):  # also when the embeddings come from the cache
        with pytest.warns(UserWarning, match="2 prompt.*longer than the 6-token context") as record:
            scorer.score([_solid("red"), _solid("blue")], [long_a, long_b])
        assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorer.score([_solid("red")], "red")


def test_rerank_best_first() -> None:
    scorer = CLIPScorer(FakeCLIP())
    images = [_solid("blue"), _solid("red"), _solid("green"), _solid("red")]
    ranking = scorer.rerank(images, "red")
    assert ranking.indices[:2] == [1, 3]
    assert torch.all(ranking.scores[:-1] >= ranking.scores[1:])
    with pytest.raises(TypeError, match="prompt must be a str, got list"):
        scorer.rerank(images, ["red"])  # type: ignore[arg-type]


def test_scorer_argument_errors() -> None:
    with pytest.raises(TypeError, match="clip must be a CLIP from clipguide.load_clip"):
        CLIPScorer(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        CLIPScorer(FakeCLIP(), batch_size=0)
    with pytest.raises(ValueError, match="workers must be a positive int or None, got 0"):
        CLIPScorer(FakeCLIP(), workers=0)
    with pytest.raises(ValueError, match="images is empty"):
        CLIPScorer(FakeCLIP()).score([], "red")


def test_robust_views() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 40, 1))  # one-pixel red top row, cropped away by "crop"
    crop = np.asarray(robust_view(image, "crop"))
    assert crop.shape == (20, 40, 3) and crop[..., 0].max() < 10
    grey = np.asarray(robust_view(image, "grayscale"))
    assert np.array_equal(grey[..., 0], grey[..., 2])
    jpeg = np.asarray(robust_view(torch.rand(3, 16, 16), "jpeg"))
    assert jpeg.shape == (16, 16, 3)
    with pytest.raises(ValueError, match=r"view must be one of \('jpeg', 'crop', 'grayscale'\)"):
        robust_view(image, "blur")


def test_robust_scores_report_each_view() -> None:
    scorer = CLIPScorer(FakeCLIP())
    report = scorer.robust_scores([_solid("red"), _solid("green")], "red")
    assert report.clean[0] > 99 and report.crop[0] > 99 and report.jpeg[0] > 98
    # grey (76, 76, 76) against "red": cos = (1.01 * g + ...) / norms, far below the colour.
    grey = scorer.score([Image.new("RGB", (8, 8), (76, 76, 76))], "red")
    assert torch.allclose(report.grayscale[0], grey[0]) and report.grayscale[0] < 70
    assert torch.equal(report.worst, torch.minimum(report.clean, report.grayscale))
    assert set(report.as_dict()) == {"clean", "jpeg", "crop", "grayscale"}


class FakePipe:
    """A pipeline whose image colour is drawn from the generator, one per generator."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, prompt, num_images_per_prompt=1, generator=None, output_type="pil"):
        generators = generator if isinstance(generator, list) else [generator]
        assert len(generators) == num_images_per_prompt
        self.calls.append(num_images_per_prompt)
        colours = [torch.rand(3, generator=g) for g in generators]
        images = torch.stack([c[:, None, None].expand(3, 4, 4) for c in colours])
        if output_type == "pt":
            return SimpleNamespace(images=images)
        return SimpleNamespace(
            images=[Image.fromarray(np.uint8(i.permute(1, 2, 0) * 255)) for i in images]
        )


@pytest.mark.parametrize("output_type", ["pil", "pt"])
def test_best_of_n_sorted_and_regenerable(output_type: str) -> None:
    pipe, scorer = FakePipe(), CLIPScorer(FakeCLIP())
    result = best_of_n(
        pipe, "red", 5, scorer, batch_size=2, seed=10, progress=False, output_type=output_type
    )
    assert pipe.calls == [2, 2, 1]
    assert sorted(result.seeds) == list(range(10, 15))
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    assert torch.allclose(result.scores, scorer.score(result.images, "red"))
    again = pipe("red", generator=result.generator(0), output_type=output_type).images[0]
    assert torch.equal(to_tensor(again), to_tensor(result.images[0]))
    assert result.seeds[0] == 10 + result.generation_order[0]
    # batch size does not change which images are made
    alone = best_of_n(
        pipe, "red", 5, scorer, batch_size=1, seed=10, progress=False, output_type=output_type
    )
    assert alone.seeds == result.seeds and torch.allclose(alone.scores, result.scores)


def test_best_of_n_seeds_from_generator_and_robust() -> None:
    scorer = CLIPScorer(FakeCLIP())
    first = best_of_n(
        FakePipe(),
        "red",
        3,
        scorer,
        generator=torch.Generator().manual_seed(1),
        robust=True,
        progress=False,
    )
    second = best_of_n(
        FakePipe(), "red", 3, scorer, generator=torch.Generator().manual_seed(1), progress=False
    )
    assert first.seeds == second.seeds and second.robust is None
    assert first.robust is not None and torch.allclose(first.robust.clean, first.scores)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be a positive int, got 0"),
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"seed": 1, "generator": torch.Generator()}, "seed or generator, not both"),
        ({"num_images_per_prompt": 2}, "'num_images_per_prompt' is set by best_of_n"),
    ],
)
def test_best_of_n_argument_errors(kwargs: dict, message: str) -> None:
    args = {"n": 2, **kwargs}
    n = args.pop("n")
    with pytest.raises(ValueError, match=message):
        best_of_n(FakePipe(), "red", n, CLIPScorer(FakeCLIP()), progress=False, **args)


# -- agreement with references, on a tiny real CLIP -----------------------------------------
@pytest.fixture(scope="module")
def tiny_pair():
    """A tiny open_clip model and the same weights as a clipguide CLIP."""
    from clipguide.model import load_clip
    from clipguide.testing import tiny_openclip_model

    model = tiny_openclip_model(seed=3)
    return model, load_clip(model)


def _openclip_preprocess():
    import open_clip

    from clipguide.testing import TINY_MODEL, register_model_configs

    register_model_configs()
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    return preprocess


def test_pil_embeddings_equal_openclip(tiny_pair) -> None:
    model, clip = tiny_pair
    preprocess = _openclip_preprocess()
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(32, 32), (50, 70), (90, 41), (33, 200)]
    ]
    images += [images[1].convert("L"), images[2].convert("CMYK")]
    ours = CLIPScorer(clip, batch_size=4).embed_images(images)
    with torch.no_grad():
        ref = torch.cat([model.encode_image(preprocess(im).unsqueeze(0)) for im in images])
    assert (ours - F.normalize(ref, dim=-1)).abs().max() <= 1e-5


def test_text_embeddings_equal_openclip_including_long_prompts(tiny_pair) -> None:
    import open_clip

    model, clip = tiny_pair
    tokenizer = open_clip.get_tokenizer("ViT-bigG-14")
    prompts = ["a red square", "two blue circles above a green triangle", "word " * 100]
    with pytest.warns(UserWarning, match="1 prompt.*77-token context"):
        ours = CLIPScorer(clip, cache=False).embed_texts(prompts)
    with torch.no_grad():
        ref = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    assert (ours - ref).abs().max() <= 1e-5


def test_scores_equal_torchmetrics_one_pair_at_a_time(tiny_pair) -> None:
    _, clip = tiny_pair
    metric = torchmetrics_clipscore(clip)
    size = clip.preprocess.image_size  # at model size the two resizers agree exactly
    rng = np.random.default_rng(1)
    arrays = rng.integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    prompts = [
        "a red square",
        "two blue circles",
        "a green triangle left of a square",
        "red",
        "blue",
    ]
    ours = CLIPScorer(clip, batch_size=2).score([Image.fromarray(a) for a in arrays], prompts)
    reference = []
    for array, prompt in zip(arrays, prompts, strict=True):
        metric.reset()
        with torch.no_grad():
            reference.append(float(metric(torch.from_numpy(array).permute(2, 0, 1), prompt)))
    assert torch.allclose(ours, torch.tensor(reference), atol=1e-4, rtol=0)
    assert len(set(reference)) == 5  # the comparison is not between constants


def test_tensor_inputs_match_pil_inputs(tiny_pair) -> None:
    _, clip = tiny_pair
    size = clip.preprocess.image_size
    arrays = np.random.default_rng(2).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    scorer = CLIPScorer(clip)
    from_pil = scorer.embed_images([Image.fromarray(a) for a in arrays])
    from_pt = scorer.embed_images(torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255)
    from_np = scorer.embed_images(arrays)
    assert torch.allclose(from_pil, from_pt, atol=1e-5) and torch.equal(from_pil, from_np)


def test_scorer_uses_the_shared_text_cache(tiny_pair) -> None:
    from clipguide.model.text_cache import TextEncodingCache

    _, clip = tiny_pair
    store = TextEncodingCache()
    scorer = CLIPScorer(clip, cache=store)
    first = scorer.embed_texts(["a red square", "a blue circle"])
    assert len(store) == 2 and store.misses == 2
    again = scorer.embed_texts("a blue circle")
    assert store.hits == 1 and torch.equal(again[0], first[1])


def test_best_of_n_with_a_diffusers_pipeline(tiny_pair) -> None:
    from clipguide.testing import tiny_sd_pipeline

    _, clip = tiny_pair
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": 2, "output_type": "pt"}
    result = best_of_n(
        pipe, "a red square", 3, CLIPScorer(clip), batch_size=2, seed=5, progress=False, **kwargs
    )
    assert sorted(result.seeds) == [5, 6, 7]
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    last = len(result.seeds) - 1
    again = pipe("a red square", generator=result.generator(last), **kwargs).images[0]
    assert torch.allclose(again, result.images[last], atol=1e-5)


def test_progress_bars_are_on_by_default_as_in_diffusers(capsys) -> None:
    """One rule: CLIPScorer and best_of_n show a bar unless progress=False (the CLI's
    --no-progress); anything but a bool is refused."""
    import inspect

    assert CLIPScorer(FakeCLIP()).progress is True
    assert inspect.signature(best_of_n).parameters["progress"].default is True
    CLIPScorer(FakeCLIP()).score([_solid("red")] * 3, "red")
    assert "encoding images" in capsys.readouterr().err
    CLIPScorer(FakeCLIP(), progress=False).score([_solid("red")] * 3, "red")
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="progress must be True or False, got None"):
        CLIPScorer(FakeCLIP(), progress=None)  # type: ignore[arg-type]


def test_prefetched_batches_work_one_batch_ahead_on_worker_threads() -> None:
    import threading

    from clipguide.scoring.batches import batched, flat, prefetched

    started = {k: threading.Event() for k in range(3)}
    release = threading.Event()
    threads = set()

    def work(part):
        threads.add(threading.current_thread().name)
        started[part[0] // 10].set()
        if part[0] >= 10:
            release.wait(10)  # the next batch is prepared while the caller holds this one
        return [x * 2 for x in part]

    items = list(range(30))
    batches = batched(items, 10)
    assert [list(b) for b in batches] == [items[:10], items[10:20], items[20:]]
    stream = prefetched(batches, work, workers=3)
    first, parts = next(stream)
    assert list(first) == items[:10] and flat(parts) == [x * 2 for x in items[:10]]
    assert started[1].wait(10)  # batch 1 started before the caller asked for it
    assert not started[2].is_set()  # and only one batch ahead
    release.set()
    rest = [flat(p) for _, p in stream]
    assert rest == [[x * 2 for x in items[10:20]], [x * 2 for x in items[20:]]]
    assert threading.current_thread().name not in threads
