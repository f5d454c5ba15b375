"""Training utilities of the micro world: schedule, checkpoint resume, VAE stage smoke run."""

import json

import torch

from clipguide.shapes.train import Checkpointer, cosine_lr, main


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


def test_vae_stage_runs_resumes_and_exports(tmp_path):
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    argv = _smoke_argv("vae", tmp_path, steps=2, batch=2)
    main(argv)
    assert (tmp_path / "run" / "ckpt.pt").exists()
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert cfg["scaling_factor"] > 0 and cfg["latent_channels"] == 4
    AutoencoderKL.from_pretrained(tmp_path / "vae")  # loads
    stored = load_file(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    main(argv)  # resumes at step 2: nothing left to train, exports again
    assert torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)["step"] == 2


def test_decoder_stage_distils_the_vae_into_an_autoencoder_tiny(tmp_path):
    from diffusers import AutoencoderTiny

    argv = _smoke_argv("decoder", tmp_path, steps=3, batch=4)
    main(argv)
    data = torch.load(next((tmp_path / "run").glob("decoder_data_*.pt")), weights_only=False)
    # 8 clean latents plus the predicted x0 of every step of one 20-step trajectory
    assert data["latents"].shape == (8 + 20, 4, 16, 16)
    assert data["latent_grads"].shape == data["latents"].shape
    assert data["out_grads"].shape == data["images"].shape == (28, 3, 64, 64)
    assert data["latent_grads"].abs().sum() > 0
    decoder = AutoencoderTiny.from_pretrained(tmp_path / "decoder")
    assert decoder.config.scaling_factor == 1.0
    assert decoder.decoder(data["latents"][:2]).shape == (2, 3, 64, 64)
