"""Best-of-N generation: make N images with recorded seeds and keep them sorted by a judge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from clipguide.scoring.methods import check_method
from clipguide.scoring.metrics import rank
from clipguide.scoring.robust import RobustScores
from clipguide.scoring.scorer import CLIPScorer

__all__ = ["BestOfN", "best_of_n"]


@dataclass(frozen=True)
class BestOfN:
    """Generated images sorted by score, best first, with the seed that regenerates each.

    ``pipe(prompt, generator=result.generator(i), **same_kwargs)`` reproduces ``images[i]``.
    """

    prompt: str
    images: list[Any]
    scores: torch.Tensor
    seeds: list[int]
    generation_order: list[int]
    robust: RobustScores | None = None
    generator_device: str = "cpu"
    candidates: tuple[Any, ...] = ()
    """Per image (sorted like ``images``), the
    :class:`~clipguide.conditioning.layout_policy.Candidate` it was made with (its layout and
    how it was used; ``Candidate()`` for a plain one); empty when no layouts were asked for."""

    def generator(self, i: int) -> torch.Generator:
        """A fresh generator seeded to regenerate ``images[i]``."""
        return torch.Generator(device=self.generator_device).manual_seed(self.seeds[i])


def best_of_n(
    pipe: Any,
    prompt: Any,
    n: int,
    scorer: CLIPScorer,
    *,
    batch_size: int = 1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    generator_device: str = "cpu",
    robust: bool = False,
    progress: bool = True,
    method: str | None = None,
    layouts: str | Sequence[Any] | None = None,
    plain: int | None = None,
    policy: Mapping[str, Any] | None = None,
    **pipe_kwargs: Any,
) -> BestOfN:
    """Generate ``n`` images of ``prompt`` and return them sorted by the scorer, best first.

    Image ``i`` is generated with its own generator seeded ``seed + i`` (or with seeds drawn
    from ``generator``, or from torch's global RNG when neither is given), so any image can be
    regenerated alone with :meth:`BestOfN.generator`. ``method`` picks how images are ranked
    (:data:`clipguide.scoring.methods.METHODS`; default: the scorer's own, plain CLIPScore
    unless it was made with another); ``scores`` are that method's.

    ``layouts`` spreads the candidates over layouts of the image
    (:func:`~clipguide.conditioning.layout_policy.plan_candidates`: ``"auto"`` reads them from
    the prompt, or pass a list of ``Layout``): laid-out candidates come first, cycling over the
    layouts, then ``plain`` plain ones (default: a quarter of them), each sampled under its ``RegionalPrompt``; ``policy`` says which kinds
    of prompt get a layout and how (default
    :data:`~clipguide.conditioning.layout_policy.DEFAULT_POLICY`). Image ``i`` keeps seed
    ``seed + i`` whatever its layout, and ``candidates`` records each image's layout. With
    the ``"structured"`` method, images are then also scored on how well their boxes show
    their phrases (the best of the layouts drawn on; see
    :func:`~clipguide.scoring.methods.selection_scores`).

    ``prompt`` is a text, or a :class:`~clipguide.conditioning.Conditioning` from
    :func:`clipguide.encode_prompt` (one prompt), whose embeddings the pipeline is called with
    and whose plain text is scored. A text with the embeddings in ``pipe_kwargs``
    (``best_of_n(pipe, prompt, n, scorer, **encode_prompt(pipe, prompt))``) is scored and
    not passed to the pipeline. Images are compared with the prompt's plain text.
    """
    prompt, pipe_kwargs = _text_and_call(prompt, pipe_kwargs)
    _check_args(pipe, prompt, n, scorer, batch_size, seed, generator, pipe_kwargs)
    if method is not None:
        check_method(method)
        if not callable(getattr(scorer, "select", None)):
            raise TypeError(
                f"method={method!r} needs a CLIPScorer (with .select), got {_got(scorer)}"
            )
    _check_flags(robust=robust, progress=progress)
    try:  # an unknown or unavailable device fails here, before any image is made
        torch.Generator(device=generator_device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"generator_device must be a device torch can make generators on ('cpu', 'cuda', "
            f"...), got {generator_device!r}: {err}"
        ) from None
    if seed is not None:
        seeds = [seed + i for i in range(n)]
    else:  # drawn on the generator's own device (a CUDA generator cannot fill a CPU tensor)
        device = generator.device if generator is not None else None
        seeds = torch.randint(0, 2**62, (n,), generator=generator, device=device).tolist()
    plan = _plan(prompt, n, layouts, plain, policy)
    made: dict[int, Any] = {}
    batches = _batches(len(seeds), plan, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, unit="batch", desc="best_of_n")
    for batch, candidate in batches:
        generators = [torch.Generator(device=generator_device).manual_seed(seeds[i]) for i in batch]
        text = {} if "prompt_embeds" in pipe_kwargs else {"prompt": prompt}
        with _conditioning(pipe, candidate):
            out = pipe(
                **text, num_images_per_prompt=len(batch), generator=generators, **pipe_kwargs
            )
        made.update(zip(batch, _batch_images(out, len(batch)), strict=True))
    images = [made[i] for i in range(len(seeds))]
    select = getattr(scorer, "select", None)
    drawn = _drawn_on(plan)
    if select is None:
        scores = scorer.score(images, prompt)
    elif drawn and (method or getattr(scorer, "method", None)) == "structured":
        scores = select(images, prompt, method, layouts=drawn)
    else:
        scores = select(images, prompt, method)
    ranking = rank(scores)
    order = ranking.indices
    ranked = [images[i] for i in order]
    robust_scores = scorer.robust_scores(ranked, prompt) if robust else None
    return BestOfN(
        prompt=prompt,
        images=ranked,
        scores=ranking.scores,
        seeds=[seeds[i] for i in order],
        generation_order=order,
        robust=robust_scores,
        generator_device=generator_device,
        candidates=() if plan is None else tuple(plan[i] for i in order),
    )


def _plan(
    prompt: str, n: int, layouts: Any, plain: int | None, policy: Mapping[str, Any] | None
) -> list[Any] | None:
    """Each candidate's layout (None when no layouts were asked for: all plain)."""
    if layouts is None:
        if plain is not None:
            raise ValueError(f"plain={plain!r} needs layouts; pass layouts='auto' or a list")
        return None
    from clipguide.conditioning.layout_policy import DEFAULT_POLICY, plan_candidates

    policy = DEFAULT_POLICY if policy is None else policy
    return plan_candidates(prompt, n, layouts, plain=plain, policy=policy)


def _drawn_on(plan: list[Any] | None) -> list[Any]:
    """The distinct layouts the plan's candidates are drawn on, in plan order."""
    return list(dict.fromkeys(c.layout for c in plan or () if c.layout is not None))


def _batches(count: int, plan: list[Any] | None, size: int) -> list[tuple[list[int], Any]]:
    """Candidate indices in batches of at most ``size`` that share one conditioning: a layout
    the plan cycles through (L0, L1, L0, plain) is attached once per batch, not per image."""
    groups: dict[Any, list[int]] = {}
    for i in range(count):
        groups.setdefault(None if plan is None else plan[i], []).append(i)
    return [
        (members[k : k + size], candidate)
        for candidate, members in groups.items()
        for k in range(0, len(members), size)
    ]


def _conditioning(pipe: Any, candidate: Any):
    """The candidate's ``RegionalPrompt`` attached to ``pipe``, or nothing for a plain one."""
    if candidate is None or candidate.layout is None:
        return nullcontext()
    from clipguide.conditioning.layout_policy import regional_prompt

    return regional_prompt(candidate.layout, candidate.use).attach(pipe)


def _check_args(
    pipe: Any,
    prompt: Any,
    n: Any,
    scorer: Any,
    batch_size: Any,
    seed: Any,
    generator: Any,
    pipe_kwargs: dict,
) -> None:
    """Cheap checks before any image is made; each message names the argument and value."""

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if not callable(pipe):
        raise TypeError(f"pipe must be a callable diffusers pipeline, got {_got(pipe)}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {_got(prompt)}")
    if not prompt.strip():
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    if not positive_int(n):
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not callable(getattr(scorer, "score", None)):
        raise TypeError(f"scorer must be a CLIPScorer (with .score), got {_got(scorer)}")
    if not positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if seed is not None and (
        not isinstance(seed, int) or isinstance(seed, bool) or not -(2**63) <= seed <= 2**64 - n
    ):  # seed .. seed + n - 1 must all be seeds torch.Generator.manual_seed takes
        raise ValueError(f"seed must be None or an int in [-2**63, 2**64 - n], got {seed!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {_got(generator)}")
    for reserved in ("generator", "num_images_per_prompt", "prompt"):
        if reserved in pipe_kwargs:
            raise ValueError(
                f"{reserved!r} is set by best_of_n; do not pass it in pipe_kwargs "
                f"(got {reserved}={_got(pipe_kwargs[reserved])})"
            )
    output_type = pipe_kwargs.get("output_type", "pil")
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(
            f"output_type must be 'pil', 'np' or 'pt' (images the scorer can read), "
            f"got {output_type!r}"
        )


def _text_and_call(prompt: Any, pipe_kwargs: dict) -> tuple[Any, dict]:
    """The text to score and the pipeline's keyword arguments, for a text or a Conditioning."""
    from clipguide.conditioning.carried import prompt_of

    if isinstance(prompt, Mapping) and "prompt_embeds" in prompt:
        texts = getattr(prompt, "prompt", None) or prompt_of(prompt["prompt_embeds"])
        if not texts or len(texts) != 1:
            raise ValueError(
                "prompt must be a str or a Conditioning of one prompt from encode_prompt (it "
                "knows its text; num_images_per_prompt=1: best_of_n makes the n images), got "
                f"{_got(prompt)}"
            )
        clash = sorted(set(prompt) & set(pipe_kwargs))
        if clash:
            raise ValueError(f"{clash[0]!r} is given twice: in prompt and in pipe_kwargs")
        return texts[0], {**pipe_kwargs, **prompt}
    return prompt, pipe_kwargs


def _got(value: Any) -> str:
    """``repr`` (shortened) and type of a received value, for error messages; a tensor by
    its shape and dtype."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _check_flags(**flags: Any) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")


def _batch_images(out: Any, expected: int) -> list[Any]:
    """The images of one pipeline call (PIL list, NHWC array or NCHW tensor), counted."""
    images = getattr(out, "images", None)
    if images is None:
        raise TypeError(
            f"pipe returned {type(out).__name__} without .images; best_of_n needs a diffusers "
            "pipeline output"
        )
    images = list(images)
    if len(images) != expected:
        raise ValueError(
            f"pipe returned {len(images)} images for num_images_per_prompt={expected}; "
            "best_of_n needs one image per generator"
        )
    return images
