import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

from clipguide.testing import (  # noqa: E402 - after the offline switches
    register_model_configs,
    tiny_clip,
    tiny_sdxl_pipeline,
)

# the tiny test config (clipguide-tiny) is known to open_clip in every test, registered here:
# load_clip itself never imports clipguide.testing
register_model_configs()


# Shared by the guidance tests, one of each per test module; a module that needs another CLIP or
# pipeline defines its own fixture of the same name, which takes precedence.
@pytest.fixture(scope="module")
def clip():
    """A tiny random two-tower CLIP (the guide of the guidance tests)."""
    return tiny_clip(seed=5)


@pytest.fixture(scope="module")
def pipe():
    """A tiny random SDXL pipeline, progress bars off."""
    built = tiny_sdxl_pipeline()
    built.set_progress_bar_config(disable=True)
    return built
