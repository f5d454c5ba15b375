"""clipguide: OpenCLIP ViT-bigG/14 for diffusers — conditioning, CLIP guidance, scoring."""

__version__ = "0.1.0"
