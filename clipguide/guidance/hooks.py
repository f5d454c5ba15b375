"""One UNet forward hook and one ``encode_prompt`` wrapper per pipeline, shared by attachments.

Several guidances can be attached to one pipeline at once (overlapping or nested ``with``
blocks) and detached in any order. Each attachment registers in the pipeline's
:class:`PipelineHooks`; the first one installs the UNet hook and the ``encode_prompt`` wrapper,
the last one to leave removes both and restores what was there. The run's state (its prompt,
images per prompt, which model evaluation is under way) belongs to the registry, so every
attachment sees the run in progress rather than the last run it happened to witness, and a
guidance's extra UNet pass (``mode="full"``) is invisible to the others.

The hook acts only inside the owning pipeline's own call: a sibling built from the same
components (``StableDiffusionXLPipeline(**pipe.components)``, ``from_pipe``, an img2img
pipeline) shares the UNet object, so the hook also fires in the sibling's runs, which then
stay unguided, bit for bit, and leave the attachments' state (history, prompt) alone.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from clipguide.conditioning.carried import prompt_of

from .schedulers import EvaluationCounter
from .step import unet_timestep

__all__ = ["PipelineHooks", "HookEntry", "running_pipeline"]

_ATTR = "_clipguide_hooks"
_MISSING: Any = object()


class HookEntry(Protocol):
    """What an attachment offers the registry."""

    def new_run(self) -> None: ...

    def step(
        self, unet: Any, args: tuple, kwargs: dict, output: Any, position: int, total: int
    ) -> Any: ...


def _owner_of_hooks(unet: torch.nn.Module) -> list[PipelineHooks]:
    """Registries whose hook sits on ``unet`` (one per pipeline sharing it)."""
    found = []
    for hook in unet._forward_hooks.values():
        owner = getattr(hook, "__self__", None)
        if isinstance(owner, PipelineHooks):
            found.append(owner)
    return found


def running_pipeline(unet: torch.nn.Module) -> Any:
    """The pipeline whose call (``__call__``) is running ``unet`` on this thread: the innermost
    such call on the stack whose pipeline holds this very UNet, or None outside any.

    The pipeline classes' ``__call__`` cannot be wrapped per instance (Python looks it up on the
    type), so the stack is read: a few dozen frames per UNet forward, the locals of the
    ``__call__`` frames only.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "__call__":
            owner = frame.f_locals.get("self")
            if owner is not None and getattr(owner, "unet", None) is unet:
                return owner
        frame = frame.f_back
    return None


class PipelineHooks:
    """The hook and wrapper clipguide installs on one pipeline, and the attachments using them."""

    def __init__(self, pipe: Any) -> None:
        unet = pipe.unet
        others = [h for h in _owner_of_hooks(unet) if h.pipe is not pipe]
        if others:
            raise ValueError(
                f"pipe={type(pipe).__name__} shares its unet with another "
                f"{type(others[0].pipe).__name__} that has CLIP guidance attached; guidance attaches "
                "to one of the pipelines sharing a UNet at a time (the others run unguided). "
                "Detach the other guidance first."
            )
        self.pipe = pipe
        self.unet = unet
        self.entries: dict[int, HookEntry] = {}
        self.prompts: Any = None
        self.per_prompt = 1
        self.counter = EvaluationCounter()
        self._paused = False
        self._saved = _MISSING
        self._wrapper: Any = None
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
                f"pipe={type(pipe).__name__}.unet was replaced while CLIP guidance was attached "
                "to the previous one; detach every guidance, then attach again"
            )
        return found

    # -- membership -------------------------------------------------------------------------
    def add(self, entry: HookEntry) -> None:
        self.entries[id(entry)] = entry

    def remove(self, entry: HookEntry) -> None:
        """Remove ``entry``; with the last one gone, restore the pipeline as it was."""
        self.entries.pop(id(entry), None)
        if not self.entries:
            self._uninstall()

    def _uninstall(self) -> None:
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
        """UNet calls inside are not evaluations of the run (a guidance's own extra pass)."""
        previous, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = previous

    def _on_unet(self, unet: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        if self._paused or not self.entries or running_pipeline(unet) is not self.pipe:
            return None  # an extra pass, detached, or another pipeline sharing the UNet
        position, total, new = self.counter.advance(
            self.pipe.scheduler, unet_timestep(args, kwargs)
        )
        entries = list(self.entries.values())
        if new:
            for entry in entries:
                entry.new_run()
        changed = None
        for entry in entries:
            result = entry.step(unet, args, kwargs, output, position, total)
            if result is not None:
                output = changed = result
        return changed
