import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from clipguide.testing import register_model_configs  # noqa: E402 - after the offline switches

# the tiny test config (clipguide-tiny) is known to open_clip in every test, registered here:
# load_clip itself never imports clipguide.testing
register_model_configs()
