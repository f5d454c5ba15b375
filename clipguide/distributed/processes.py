"""``clipguide generate`` over several processes (``accelerate launch --multi_gpu`` on GPUs,
``torchrun --nproc_per_node N`` on CPUs): each process draws a contiguous share of the images
with accelerate's ``split_between_processes`` and writes their PNGs and sidecars, under the
names and seeds one process would give them, so the folder ends up as one process's would.

A single process (no ``WORLD_SIZE`` > 1 in the environment) never imports accelerate.
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Any

__all__ = ["launched_processes", "process_state", "share_of_images"]


def launched_processes() -> int:
    """How many processes the launcher (accelerate, torchrun) started; 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def process_state(device: str | None) -> Any:
    """accelerate's ``PartialState`` for this launch; ``cpu=True`` unless on CUDA.

    Without ``cpu=True`` on a CPU machine every process would believe it is alone and all of
    them would do all the work; that is checked here and refused.
    """
    import torch
    from accelerate import PartialState

    on_cpu = (device or "").startswith("cpu") or (device is None and not torch.cuda.is_available())
    state = PartialState(cpu=on_cpu)
    if state.num_processes != launched_processes():
        raise RuntimeError(
            f"the launcher started {launched_processes()} processes but accelerate sees "
            f"{state.num_processes}; launch with accelerate launch or torchrun"
        )
    return state


def share_of_images(args: argparse.Namespace, state: Any) -> argparse.Namespace | None:
    """A copy of ``generate``'s options for this process's share of ``--num-images``
    (``--seed`` moved to its first image, as one process would seed it), or None if this
    process has no image to draw. ``--best-of N`` seeds image ``i``'s candidates from
    ``seed + i * N``, so the share starts at ``seed + first * N``."""
    with state.split_between_processes(list(range(args.num_images))) as mine:
        indices = list(mine)
    if not indices:
        return None
    share = copy.copy(args)
    share.seed = args.seed + indices[0] * args.best_of
    share.num_images = len(indices)
    if args.device is None and str(state.device).startswith("cuda"):
        share.device = str(state.device)  # one GPU per process
    return share
