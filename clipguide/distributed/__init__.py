"""Large jobs: CLIP scores of millions of images on Ray Data, and generation spread over
processes with accelerate. Both are optional: Ray is imported only when a job runs, and
without it the error names the extra (``pip install "clipguide[ray]"``).

``score_dataset`` returns the lazy Ray Dataset of scored rows; ``score_to_parquet`` runs a
resumable job into a folder of Parquet parts; ``top_k_per_prompt`` reranks at scale and
``best_sheets`` draws best-of-N sheets for a sample of prompts. ``processes`` splits
``clipguide generate`` over the processes of ``accelerate launch`` / ``torchrun``.
"""

from typing import TYPE_CHECKING

from clipguide._lazy import lazy_package

if TYPE_CHECKING:  # imported on first use (clipguide._lazy)
    from clipguide.distributed.jobs import score_to_parquet, top_k_per_prompt, top_k_rows
    from clipguide.distributed.parts import read_output
    from clipguide.distributed.ray_score import RAY_EXTRA, job_items, score_dataset, score_items
    from clipguide.distributed.sheets import best_sheets

__all__ = [
    "RAY_EXTRA",
    "job_items",
    "score_dataset",
    "score_items",
    "score_to_parquet",
    "read_output",
    "top_k_rows",
    "top_k_per_prompt",
    "best_sheets",
]

lazy_package(
    __name__,
    {
        "clipguide.distributed.jobs": ("score_to_parquet", "top_k_per_prompt", "top_k_rows"),
        "clipguide.distributed.parts": ("read_output",),
        "clipguide.distributed.ray_score": (
            "RAY_EXTRA",
            "job_items",
            "score_dataset",
            "score_items",
        ),
        "clipguide.distributed.sheets": ("best_sheets",),
    },
)
