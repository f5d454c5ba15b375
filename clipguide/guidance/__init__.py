"""CLIP-gradient guidance during sampling."""

__all__: list[str] = []
