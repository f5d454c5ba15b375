"""Peak extra resident memory of attaching a vision tower to an SDXL-style pipeline.

For each vision config, a child process builds the tiny SDXL pipeline, then calls
``load_clip(pipe, vision="local-dir:...")`` while a thread samples RSS every millisecond.
Reported: (peak RSS during the attach - RSS before) / the vision tower's parameter bytes.
Last line: JSON.

    python benchmarks/load_memory.py            # tiny + ViT-L/14-sized vision (fp32)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CONFIGS = {
    # name: open_clip model config (only the vision tower is attached)
    "tiny": "clipguide-tiny",
    "mid (ViT-L-14 vision, 303 M params)": "ViT-L-14",
}


def _make_checkpoint(model_name: str, folder: Path) -> None:
    import open_clip
    import torch

    from clipguide.testing import register_model_configs, save_openclip_dir

    register_model_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None)
    save_openclip_dir(model, folder, open_clip.get_model_config(model_name))


def _child(folder: str) -> None:
    import psutil
    import torch

    from clipguide import load_clip
    from clipguide.testing import tiny_sdxl_pipeline

    torch.set_num_threads(1)
    pipe = tiny_sdxl_pipeline()
    proc = psutil.Process()
    time.sleep(0.2)
    before = proc.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.001)

    t = threading.Thread(target=sample)
    t.start()
    clip = load_clip(pipe, vision=f"local-dir:{folder}")
    done.set()
    t.join()
    peak = max(peak, proc.memory_info().rss)
    nbytes = sum(p.numel() * p.element_size() for p in clip.vision_model.parameters())
    assert clip.text_model is pipe.text_encoder_2
    print(json.dumps({"extra_bytes": peak - before, "param_bytes": nbytes}))


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, model_name in CONFIGS.items():
            folder = Path(tmp) / model_name
            _make_checkpoint(model_name, folder)
            out = (
                subprocess.run(
                    [sys.executable, __file__, "--child", str(folder)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            r = json.loads(out)
            ratio = r["extra_bytes"] / r["param_bytes"]
            results[label] = {
                "vision_param_MB": round(r["param_bytes"] / 2**20, 2),
                "peak_extra_rss_MB": round(r["extra_bytes"] / 2**20, 2),
                "ratio": round(ratio, 3),
            }
            print(
                f"{label:40s} params {r['param_bytes'] / 2**20:9.1f} MB  "
                f"peak extra RSS {r['extra_bytes'] / 2**20:9.1f} MB  ratio {ratio:.3f}"
            )
    print(json.dumps({"benchmark": "load_memory", "goal": "<= 1.05", "results": results}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        main()
