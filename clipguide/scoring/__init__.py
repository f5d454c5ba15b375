"""Scoring: similarity of images and prompts after sampling, as pure functions (``metrics``)
and a thin scorer around a CLIP (``scorer``), with robust re-scoring, best-of-N selection,
contact sheets and binding-aware hard-negative captions (``captions``)."""

from typing import TYPE_CHECKING

from clipguide._lazy import lazy_package

if TYPE_CHECKING:  # imported on first use (clipguide._lazy)
    from clipguide.scoring.best_of_n import BestOfN, best_of_n
    from clipguide.scoring.metrics import (
        CLIPSCORE_SCALE,
        HESSEL_SCALE,
        Ranking,
        clip_score,
        cosine,
        cosine_matrix,
        rank,
    )
    from clipguide.scoring.robust import ROBUST_VIEWS, RobustScores, robust_view
    from clipguide.scoring.scorer import CLIPScorer
    from clipguide.scoring.sheet import contact_sheet

__all__ = [
    "CLIPScorer",
    "Ranking",
    "rank",
    "cosine",
    "cosine_matrix",
    "clip_score",
    "CLIPSCORE_SCALE",
    "HESSEL_SCALE",
    "RobustScores",
    "ROBUST_VIEWS",
    "robust_view",
    "best_of_n",
    "BestOfN",
    "contact_sheet",
]

lazy_package(
    __name__,
    {
        "clipguide.scoring.best_of_n": ("BestOfN", "best_of_n"),
        "clipguide.scoring.metrics": (
            "CLIPSCORE_SCALE",
            "HESSEL_SCALE",
            "Ranking",
            "clip_score",
            "cosine",
            "cosine_matrix",
            "rank",
        ),
        "clipguide.scoring.robust": ("ROBUST_VIEWS", "RobustScores", "robust_view"),
        "clipguide.scoring.scorer": ("CLIPScorer",),
        "clipguide.scoring.sheet": ("contact_sheet",),
    },
)
