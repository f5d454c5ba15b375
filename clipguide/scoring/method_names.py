"""The names of the selection methods of :mod:`clipguide.scoring.methods`, importable by the
command line's options without torch."""

__all__ = ["METHODS"]

METHODS = ("clipscore", "contrastive", "parts", "views", "structured")
