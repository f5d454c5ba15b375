"""The CLIP that clipguide loads when none is named (OpenCLIP ViT-bigG/14 and its LAION-2B
weights): plain strings, importable by the command line's options without torch."""

__all__ = ["DEFAULT_MODEL", "DEFAULT_PRETRAINED"]

DEFAULT_MODEL = "ViT-bigG-14"
DEFAULT_PRETRAINED = "laion2b_s39b_b160k"
