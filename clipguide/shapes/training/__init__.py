"""Training of the micro-world models: ``python -m clipguide.shapes.training STAGE``."""

from .clip import main

__all__ = ["main"]
