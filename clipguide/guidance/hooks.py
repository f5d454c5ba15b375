"""One UNet forward hook and one ``encode_prompt`` wrapper per pipeline, shared by attachments.

Attachments are CLIP guidances and regional prompts (:mod:`clipguide.conditioning.regions`).
Several can be attached to one pipeline at once (overlapping or nested ``with``
blocks) and detached in any order. Each attachment registers in the pipeline's
:class:`PipelineHooks`; the first one installs the UNet hook and the ``encode_prompt`` wrapper,
the last one to leave removes both and restores what was there. The run's state (its prompt,
images per prompt, which model evaluation is under way) belongs to the registry, so every
attachment sees the run in progress rather than the last run it happened to witness, and a
guidance's extra UNet pass (``mode="full"``) is invisible to the others.

A forward pre-hook counts the evaluation before the UNet runs and publishes it as
:attr:`PipelineHooks.current` (position, CFG state, latent size), so hooks inside the UNet
(regions' attention hooks, registered through :meth:`PipelineHooks.hook_module` and removed
with their attachment) know which evaluation they are part of.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from clipguide.conditioning.carried import prompt_of

from .checks import describe_object
from .schedulers import EvaluationCounter
from .step import unet_timestep

__all__ = ["PipelineHooks", "HookEntry", "Attachment", "Evaluation", "check_hookable", "last_rows"]

_ATTR = "_clipguide_hooks"
_MISSING: Any = object()


class HookEntry(Protocol):
    """What an attachment offers the registry."""

    def new_run(self) -> None: ...

    def step(
        self, unet: Any, args: tuple, kwargs: dict, output: Any, position: int, total: int
    ) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The UNet evaluation under way: its ``position`` of ``total`` in the run, whether its batch
    is CFG-doubled (unconditional rows first), and the latents' (height, width)."""

    position: int
    total: int
    cfg: bool
    latent_hw: tuple[int, int]

    def conditional_rows(self, rows: int) -> int:
        """How many rows of a batch of ``rows`` carry the prompt: the last half under CFG."""
        return rows // 2 if self.cfg and rows % 2 == 0 else rows


def last_rows(value: Any, n: int, b: int) -> Any:
    """Last ``b`` rows of every tensor with batch ``n`` inside args/kwargs (the CFG cond half)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[n - b :]
    if isinstance(value, dict):
        return {k: last_rows(v, n, b) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(last_rows(v, n, b) for v in value)
    return value


def check_hookable(pipe: Any, what: str, modular_hint: str) -> None:
    """Raise unless the registry can hook ``pipe`` (a stock pipeline with a UNet and a
    scheduler, not a modular one), naming ``what`` would attach and, for a modular pipeline,
    ``modular_hint`` (what to do instead)."""
    from diffusers.modular_pipelines import ModularPipeline

    name = describe_object(pipe)
    if isinstance(pipe, ModularPipeline):
        raise TypeError(
            f"pipe={name} is a modular pipeline: its guider runs the UNet once per condition, "
            f"which a UNet hook cannot combine; {modular_hint}"
        )
    unet = getattr(pipe, "unet", None)
    if not isinstance(unet, torch.nn.Module) or getattr(pipe, "scheduler", None) is None:
        raise TypeError(
            f"pipe={name} is not supported: {what} attaches to pipelines with a `unet` and a "
            "`scheduler` (StableDiffusionPipeline, StableDiffusionXLPipeline and their "
            "subclasses)"
        )
    if not hasattr(pipe, "__dict__"):
        raise TypeError(f"pipe={name} keeps no instance attributes (__slots__)")


def _owner_of_hooks(unet: torch.nn.Module) -> list[PipelineHooks]:
    """Registries whose hook sits on ``unet`` (one per pipeline sharing it)."""
    found = []
    for hook in unet._forward_hooks.values():
        owner = getattr(hook, "__self__", None)
        if isinstance(owner, PipelineHooks):
            found.append(owner)
    return found


class PipelineHooks:
    """The hook and wrapper clipguide installs on one pipeline, and the attachments using them."""

    def __init__(self, pipe: Any) -> None:
        unet = pipe.unet
        others = [h for h in _owner_of_hooks(unet) if h.pipe is not pipe]
        if others:
            raise ValueError(
                f"pipe={type(pipe).__name__} shares its unet with another "
                f"{type(others[0].pipe).__name__} that has CLIP guidance or regions attached; a UNet hook "
                "cannot tell the two pipelines' runs apart. Detach them from the other first."
            )
        self.pipe = pipe
        self.unet = unet
        self.entries: dict[int, HookEntry] = {}
        self.prompts: Any = None
        self.per_prompt = 1
        self.counter = EvaluationCounter()
        self.current: Evaluation | None = None
        self._paused = False
        self._saved = _MISSING
        self._wrapper: Any = None
        self._module_handles: dict[int, list[Any]] = {}
        self._pre_handle = unet.register_forward_pre_hook(self._before_unet, with_kwargs=True)
        self._handle = unet.register_forward_hook(self._on_unet, with_kwargs=True)
        self._wrap_encode_prompt()
        vars(pipe)[_ATTR] = self

    @classmethod
    def of(cls, pipe: Any) -> PipelineHooks:
        """The pipeline's registry, created (hook and wrapper installed) if it has none."""
        found = vars(pipe).get(_ATTR)
        if not isinstance(found, cls):
            return cls(pipe)
        if found.unet is not pipe.unet:
            raise ValueError(
                f"pipe={type(pipe).__name__}.unet was replaced while CLIP guidance or regions were "
                "attached to the previous one; detach them all, then attach again"
            )
        return found

    # -- membership -------------------------------------------------------------------------
    def add(self, entry: HookEntry) -> None:
        self.entries[id(entry)] = entry

    def remove(self, entry: HookEntry) -> None:
        """Remove ``entry`` and its module hooks; with the last one gone, restore the pipeline."""
        self.entries.pop(id(entry), None)
        for handle in reversed(self._module_handles.pop(id(entry), [])):
            handle.remove()
        if not self.entries:
            self._uninstall()

    def hook_module(
        self, entry: HookEntry, module: torch.nn.Module, hook: Callable[..., Any]
    ) -> None:
        """Register ``hook`` as a forward hook (with kwargs) of ``module`` for ``entry``;
        removed when ``entry`` is."""
        handle = module.register_forward_hook(hook, with_kwargs=True)
        self._module_handles.setdefault(id(entry), []).append(handle)

    def _uninstall(self) -> None:
        self._pre_handle.remove()
        self._handle.remove()
        own = vars(self.pipe)
        if self._wrapper is not None and own.get("encode_prompt") is self._wrapper:
            if self._saved is _MISSING:
                del own["encode_prompt"]
            else:
                own["encode_prompt"] = self._saved
        # else someone wrapped encode_prompt after us: ours stays in their chain, forwarding only
        if own.get(_ATTR) is self:
            del own[_ATTR]

    # -- the run ----------------------------------------------------------------------------
    def _wrap_encode_prompt(self) -> None:
        bound = getattr(self.pipe, "encode_prompt", None)
        if not callable(bound):
            return
        # read the arguments with the class's signature: an instance-level wrapper (the
        # user's, another library's) often takes (*args, **kwargs)
        declared = getattr(type(self.pipe), "encode_prompt", None)
        try:
            signature = inspect.signature(
                declared.__get__(self.pipe) if callable(declared) else bound
            )
        except (TypeError, ValueError):
            return

        def encode_prompt(*args: Any, **kwargs: Any) -> Any:
            if self.entries:  # a pass-through once uninstalled (see _uninstall)
                try:
                    arguments = signature.bind_partial(*args, **kwargs).arguments
                except TypeError:  # the call is wrong: let encode_prompt say how
                    return bound(*args, **kwargs)
                prompt = arguments.get("prompt")
                # pipe(**encode_prompt(...)): the Conditioning's plain text, found by its tensor
                self.prompts = (
                    prompt if prompt is not None else prompt_of(arguments.get("prompt_embeds"))
                )
                self.per_prompt = int(arguments.get("num_images_per_prompt") or 1)
                self.counter.start_run()  # also img2img, whose first evaluation is not entry 0
            return bound(*args, **kwargs)

        self._saved = vars(self.pipe).get("encode_prompt", _MISSING)
        self._wrapper = encode_prompt
        vars(self.pipe)["encode_prompt"] = encode_prompt

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """UNet calls inside are not evaluations of the run (a guidance's own extra pass, on
        the conditional rows only: every row of those calls carries the prompt)."""
        previous, self._paused = self._paused, True
        outer = self.current
        if outer is not None:
            self.current = dataclasses.replace(outer, cfg=False)
        try:
            yield
        finally:
            self._paused, self.current = previous, outer

    def _before_unet(self, unet: Any, args: tuple, kwargs: dict) -> None:
        if self._paused or not self.entries:
            return None
        position, total, new = self.counter.advance(
            self.pipe.scheduler, unet_timestep(args, kwargs)
        )
        sample = args[0] if args else kwargs["sample"]
        rows = sample.shape[0]
        cfg = bool(getattr(self.pipe, "do_classifier_free_guidance", False)) and rows % 2 == 0
        self.current = Evaluation(position, total, cfg, tuple(sample.shape[-2:]))
        if new:
            for entry in list(self.entries.values()):
                entry.new_run()
        return None

    def _on_unet(self, unet: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        current = self.current
        if self._paused or not self.entries or current is None:
            return None
        changed = None
        try:
            for entry in list(self.entries.values()):
                result = entry.step(unet, args, kwargs, output, current.position, current.total)
                if result is not None:
                    output = changed = result
        finally:
            self.current = None
        return changed


class Attachment:
    """One attached object (a guidance, regions) on one pipeline's registry; a context manager
    that returns the object and detaches on exit. The object keeps it as ``_attachment``."""

    def __init__(self, owner: Any, pipe: Any) -> None:
        self.owner = owner
        self.pipe = pipe
        self.hooks: PipelineHooks | None = PipelineHooks.of(pipe)
        self.hooks.add(self)

    def __enter__(self) -> Any:
        return self.owner

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def detach(self) -> None:
        """Leave the pipeline; the last attachment to leave restores it exactly."""
        if self.hooks is not None:
            self.hooks.remove(self)
            self.hooks = None
        if getattr(self.owner, "_attachment", None) is self:
            self.owner._attachment = None

    def new_run(self) -> None:
        return None

    def step(
        self, unet: Any, args: tuple, kwargs: dict, output: Any, position: int, total: int
    ) -> Any:
        return None
