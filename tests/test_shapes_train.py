"""Training utilities of the micro world: schedule, checkpoint resume, VAE stage smoke run."""

import json

import pytest
import torch

from clipguide.shapes.training import main
from clipguide.shapes.training.common import Checkpointer, cosine_lr


def test_cosine_lr_warms_up_then_decays():
    lrs = [cosine_lr(s, 100, 1e-3, 10) for s in range(100)]
    assert lrs[0] == 1e-4 and lrs[9] == 1e-3
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert abs(cosine_lr(100, 100, 1e-3, 10) - 5e-5) < 1e-12


def test_checkpointer_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ck = Checkpointer(tmp_path, every_s=1e9)
    assert ck.load(model, opt) == 0
    ck.maybe_save(model, opt, 7)  # not due yet
    assert not ck.path.exists()
    ck.maybe_save(model, opt, 7, force=True)
    other = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(other.parameters())
    assert Checkpointer(tmp_path).load(other, opt2) == 7
    torch.testing.assert_close(other.weight, model.weight)
    assert opt2.state_dict()["state"][0]["step"] == 1


def _smoke_argv(stage: str, tmp_path, *, steps: int, batch: int) -> list[str]:
    """A few steps of ``stage`` on 8 scenes, checkpoints in tmp/run, weights in tmp/STAGE."""
    sizes = ["--steps", str(steps), "--batch", str(batch), "--pool", "8", "--warmup", "1"]
    return [stage, *sizes, "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / stage)]


def test_vae_stage_runs_resumes_and_exports(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    from clipguide.shapes.training import vae as train_vae

    steps_run = []
    real_step = train_vae.optimiser_step

    def counting_step(*args, **kwargs):
        steps_run.append(args[3])  # the step number being taken
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_vae, "optimiser_step", counting_step)
    whole = _smoke_argv("vae", tmp_path / "whole", steps=2, batch=2)
    main(whole)  # two steps without interruption: the reference
    assert steps_run == [0, 1]
    cfg = json.loads((tmp_path / "whole" / "vae" / "config.json").read_text())
    assert cfg["scaling_factor"] > 0 and cfg["latent_channels"] == 4
    AutoencoderKL.from_pretrained(tmp_path / "whole" / "vae")  # loads
    stored = load_file(tmp_path / "whole" / "vae" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}

    # the same run stopped after one step, then resumed: only step 1 is trained again
    steps_run.clear()
    main(_smoke_argv("vae", tmp_path / "split", steps=1, batch=2))
    main(_smoke_argv("vae", tmp_path / "split", steps=2, batch=2))
    assert steps_run == [0, 1]
    ref = torch.load(tmp_path / "whole" / "run" / "ckpt.pt", weights_only=True)
    got = torch.load(tmp_path / "split" / "run" / "ckpt.pt", weights_only=True)
    assert got["step"] == ref["step"] == 2
    for name, value in ref["model"].items():  # bit-identical: weights and Adam moments restored
        assert torch.equal(got["model"][name], value), name
    for key, state in ref["opt"]["state"].items():
        assert torch.equal(got["opt"]["state"][key]["exp_avg_sq"], state["exp_avg_sq"])


def test_decoder_stage_distils_the_vae_into_an_autoencoder_tiny(tmp_path):
    from diffusers import AutoencoderTiny

    argv = _smoke_argv("decoder", tmp_path, steps=3, batch=4)
    main(argv)
    data = torch.load(next((tmp_path / "run").glob("decoder_data_*.pt")), weights_only=True)
    # 8 clean latents plus the predicted x0 of every step of one 20-step trajectory
    assert data["latents"].shape == (8 + 20, 4, 16, 16)
    assert data["latent_grads"].shape == data["latents"].shape
    assert data["out_grads"].shape == data["images"].shape == (28, 3, 64, 64)
    assert data["latent_grads"].abs().sum() > 0
    decoder = AutoencoderTiny.from_pretrained(tmp_path / "decoder")
    assert decoder.config.scaling_factor == 1.0
    assert decoder.decoder(data["latents"][:2]).shape == (2, 3, 64, 64)


class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _plant(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "opt": {}, "step": 1, "x": _Payload(marker)}, path)


def test_checkpoint_and_init_from_refuse_pickled_code(tmp_path):
    marker = tmp_path / "ran.txt"
    _plant(tmp_path / "evil" / "ckpt.pt", marker)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match=r"refusing to load .*evil.*ckpt\.pt.*GLOBAL"):
        Checkpointer(tmp_path / "evil").load(model, opt)
    argv = ["clip", *_smoke_argv("clip", tmp_path, steps=1, batch=2)[1:], "--eval-n", "2"]
    with pytest.raises(ValueError, match=r"refusing to load .*evil.*ckpt\.pt"):
        main([*argv, "--init-from", str(tmp_path / "evil")])
    assert not marker.exists()


def test_caches_with_pickled_code_are_rebuilt_not_run(tmp_path, caplog):
    from clipguide.shapes.training.data import build_pool

    marker = tmp_path / "ran.txt"
    _plant(tmp_path / "pools" / "pool_3_4.pt", marker)
    with caplog.at_level("WARNING", logger="clipguide.shapes.training"):
        pool = build_pool(4, 3, cache_dir=tmp_path / "pools")
    assert "rebuilding the cache" in caplog.text and "refusing to load" in caplog.text
    assert not marker.exists()
    again = build_pool(4, 3, cache_dir=tmp_path / "pools")  # the rebuilt cache reads back
    assert torch.equal(again.images, pool.images) and again.scenes == pool.scenes
    assert again.scenes == build_pool(4, 3).scenes
    from clipguide.shapes.training.data import load_cache  # what the UNet and decoder stages use

    _plant(tmp_path / "latents.pt", marker)
    assert load_cache(tmp_path / "latents.pt") is None and not marker.exists()


def test_clip_normalisation_constants_come_from_the_model_layer():
    from clipguide.model import preprocess
    from clipguide.shapes.training import clip as train

    assert train.OPENAI_MEAN is preprocess.OPENAI_MEAN and train.OPENAI_STD is preprocess.OPENAI_STD
    assert not hasattr(train, "CLIP_MEAN") and not hasattr(train, "CLIP_STD")
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    expected = (1 - torch.tensor(preprocess.OPENAI_MEAN)) / torch.tensor(preprocess.OPENAI_STD)
    torch.testing.assert_close(train.normalise(x)[0, :, 0, 0], expected)


def test_checkpoints_and_pools_are_replaced_whole_by_the_one_atomic_writer(tmp_path, monkeypatch):
    import clipguide.cli.files as files
    from clipguide.shapes.training.data import build_pool

    written = []
    real = files._temp_path

    def spy(path):
        written.append(path.name)
        return real(path)

    monkeypatch.setattr(files, "_temp_path", spy)
    model = torch.nn.Linear(3, 2)
    Checkpointer(tmp_path / "run").maybe_save(model, torch.optim.AdamW(model.parameters()), 1, True)
    build_pool(2, 5, cache_dir=tmp_path / "pools")
    assert written == ["ckpt.pt", "pool_5_2.pt"]
    assert Checkpointer(tmp_path / "run").load(model, torch.optim.AdamW(model.parameters())) == 1
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no leftovers
