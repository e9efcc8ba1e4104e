"""Spiking-Diffusion: codebook, straight-through gradients, masking schedule, token sampler, two-stage training."""

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from spikediff import SpikediffError
from spikediff.checkpoint import CheckpointError, load_model, load_raw
from spikediff.cli import main
from spikediff.data import load_images, to_model_range
from spikediff.diffusion import kinds
from spikediff.diffusion.absorbing import (
    UnmaskDraws,
    corrupt,
    masked_counts,
    masked_cross_entropy,
    sample_tokens,
    unmask_step,
)
from spikediff.models import SpikingTokenDenoiser, SpikingVQVAE, TokenDenoiserConfig, VQConfig
from spikediff.train.vq_trainer import VQTrainConfig, train_spiking_vq


def _quantizer(k=10, d=3):
    torch.manual_seed(0)
    q = SpikingVQVAE(VQConfig(image_size=8, channels=4, codebook_size=k, code_dim=d)).quantizer
    torch.nn.init.normal_(q.codebook.weight)
    return q


def test_codebook_lookup_is_the_nearest_code():
    q = _quantizer()
    z = torch.randn(5, 3, 4, 4)
    idx = q.indices(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.cdist(flat, q.codebook.weight).argmin(1).reshape(5, 4, 4)
    assert torch.equal(idx, expected)
    codes = q.lookup(idx)
    assert codes.shape == z.shape
    assert torch.equal(codes[2, :, 1, 3], q.codebook.weight[idx[2, 1, 3]])
    with pytest.raises(SpikediffError, match=r"token ids must be in \[0, 10\)"):
        q.lookup(torch.tensor([[[10]]]))


def test_straight_through_gradients_and_the_two_losses():
    q = _quantizer()
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    zq, idx, codebook_loss, commitment = q(z)
    assert torch.allclose(zq.detach(), q.lookup(idx).detach(), atol=1e-6)  # forward: the codes
    w = torch.randn_like(zq)
    (zq * w).sum().backward()
    assert torch.equal(z.grad, w)  # backward: identity to the encoder
    assert q.codebook.weight.grad is None  # and nothing to the codebook
    z.grad = None
    codebook_loss.backward()
    assert z.grad is None and q.codebook.weight.grad.abs().sum() > 0  # codebook loss moves only the codes
    q.codebook.weight.grad = None
    zq, idx, codebook_loss, commitment = q(z)
    commitment.backward()
    assert q.codebook.weight.grad is None and z.grad.abs().sum() > 0  # commitment moves only the encoder
    e = q.lookup(idx).detach()
    assert torch.allclose(z.grad, 2 * (z - e).detach() / z.numel())


def test_dead_codes_restart_on_latents_of_the_batch():
    q = _quantizer(k=6)
    z = torch.randn(1, 3, 2, 2)
    idx = torch.tensor([[[0, 0], [1, 1]]])
    before = q.codebook.weight.detach().clone()
    assert q.restart_dead(z, idx, torch.Generator().manual_seed(0)) == 4
    after = q.codebook.weight.detach()
    assert torch.equal(after[:2], before[:2])
    latents = z.permute(0, 2, 3, 1).reshape(-1, 3)
    for code in after[2:]:
        assert any(torch.equal(code, lat) for lat in latents)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("steps", [1, 5, 20, 49])
def test_masked_counts_unmask_everything_at_least_one_per_step(kind, steps):
    counts = masked_counts(steps, 49, kind)
    assert len(counts) == steps + 1 and counts[0] == 49 and counts[-1] == 0
    assert np.all(np.diff(counts) <= -1)


def test_cosine_schedule_unmasks_fewer_tokens_first():
    cos, lin = masked_counts(10, 49, "cosine"), masked_counts(10, 49, "linear")
    assert np.all(cos >= lin) and cos[1] > lin[1]
    assert list(lin) == [49, 44, 39, 34, 29, 24, 20, 15, 10, 5, 0]
    with pytest.raises(SpikediffError, match="1 to 49 steps"):
        masked_counts(50, 49)


def test_corruption_masks_the_scheduled_fraction():
    tokens = torch.randint(0, 7, (4000, 7, 7))
    masked, mask, ratio = corrupt(tokens, 7, torch.Generator().manual_seed(0), "cosine")
    assert torch.equal(masked[mask], torch.full_like(masked[mask], 7))
    assert torch.equal(masked[~mask], tokens[~mask])
    counts = mask.flatten(1).sum(1)
    assert counts.min() >= 1
    assert torch.allclose(ratio, counts.double() / 49)
    # progress ~ U(0, 1), masked fraction cos(pi p / 2): its mean is 2 / pi (ceil adds < 1/49)
    assert abs(float(ratio.mean()) - 2 / math.pi) < 0.03


def test_masked_cross_entropy_ignores_unmasked_cells():
    logits = torch.randn(2, 5, 3, 3)
    tokens = torch.randint(0, 5, (2, 3, 3))
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = True
    expected = (torch.nn.functional.cross_entropy(logits[0, :, 1, 2][None], tokens[0, 1, 2][None])
                + torch.nn.functional.cross_entropy(logits[1, :, 0, 0][None], tokens[1, 0, 0][None])) / 2
    assert torch.allclose(masked_cross_entropy(logits, tokens, mask), expected)


def test_unmask_step_draws_from_the_softmax_of_the_scheduled_cells():
    n, k, length = 20000, 4, 6
    counts = np.array([6, 3, 0])
    draws = UnmaskDraws(n, length, seed=1)
    logits = np.tile(np.log(np.array([0.1, 0.2, 0.3, 0.4]))[None, :, None], (n, 1, length))
    tokens = unmask_step(np.full((n, length), k), logits, 0, counts, draws)
    first = draws.order[:, :3]
    picked = np.take_along_axis(tokens, first, axis=1)
    assert np.all(picked < k)  # the three scheduled cells got tokens ...
    rest = np.take_along_axis(tokens, draws.order[:, 3:], axis=1)
    assert np.all(rest == k)  # ... the others are still masked
    freq = np.bincount(picked.ravel(), minlength=k) / picked.size
    assert np.allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    # a temperature near zero is the argmax
    cold = unmask_step(np.full((n, length), k), logits, 0, counts, draws, temperature=1e-3)
    assert np.all(np.take_along_axis(cold, first, axis=1) == 3)


def test_confidence_order_unmasks_the_surest_masked_cells(monkeypatch):
    from spikediff.diffusion import absorbing

    n, k, length = 50, 4, 6
    counts = np.array([6, 4, 1, 0])
    draws = UnmaskDraws(n, length, seed=2)
    sure, unsure = np.log([0.97, 0.01, 0.01, 0.01]), np.log([0.25, 0.25, 0.25, 0.25])
    logits = np.tile(unsure[None, :, None], (n, 1, length))
    logits[:, :, 4], logits[:, :, 1] = sure, sure + 0.01  # cells 1 and 4 are the surest
    monkeypatch.setattr(absorbing, "CONFIDENCE_NOISE", 0.0)
    # confidence is that of the drawn token: near-argmax draws (a low temperature) make it the model's certainty
    tokens = unmask_step(np.full((n, length), k), logits, 0, counts, draws, temperature=1e-3, order="confidence")
    assert np.all((tokens < k).sum(1) == 2) and np.all(tokens[:, [1, 4]] == 0)
    # already unmasked cells are never drawn again, however sure; every step unmasks what the schedule says
    tokens[:, 1] = 3
    again = unmask_step(tokens, logits, 1, counts, draws, temperature=1e-3, order="confidence")
    assert np.all(again[:, 1] == 3) and np.all((again < k).sum(1) == 5)
    # with noise, the order still depends on the confidence, and differs across images
    monkeypatch.setattr(absorbing, "CONFIDENCE_NOISE", 1.0)
    noisy = unmask_step(np.full((n, length), k), logits, 0, counts, draws, order="confidence")
    assert np.mean(noisy[:, [1, 4]] < k) > 0.5 and len({tuple(row < k) for row in noisy}) > 1
    with pytest.raises(SpikediffError, match="choose one of random, confidence"):
        unmask_step(np.full((n, length), k), logits, 0, counts, draws, order="best")


def test_confidence_order_sampler_is_deterministic_and_differs_from_random():
    sdid = _tiny_sdid()
    a = sample_tokens(sdid, 7, steps=4, seed=3, batch_size=7, progress=False, order="confidence")
    chunk = sample_tokens(sdid, 3, steps=4, seed=3, progress=False, first=4, order="confidence")
    assert a.min() >= 0 and a.max() < 6 and torch.equal(a[4:], chunk)
    assert not torch.equal(a, sample_tokens(sdid, 7, steps=4, seed=3, progress=False))


def _tiny_sdid(k=6, grid=3):
    torch.manual_seed(0)
    return SpikingTokenDenoiser(TokenDenoiserConfig(codebook_size=k, grid=grid, channels=8, hidden=16))


def test_token_sampler_is_deterministic_and_independent_of_batching():
    sdid = _tiny_sdid()
    a = sample_tokens(sdid, 7, steps=4, seed=3, batch_size=7, progress=False)
    b = sample_tokens(sdid, 7, steps=4, seed=3, batch_size=2, progress=False)
    chunk = sample_tokens(sdid, 3, steps=4, seed=3, progress=False, first=4)
    assert a.shape == (7, 3, 3) and a.min() >= 0 and a.max() < 6
    assert torch.equal(a, b) and torch.equal(a[4:], chunk)
    assert not torch.equal(a, sample_tokens(sdid, 7, steps=4, seed=4, progress=False))


def test_sdid_logits_depend_on_the_tokens_and_the_masked_fraction():
    sdid = _tiny_sdid()
    tokens = torch.randint(0, 7, (2, 3, 3))
    stats = {}
    with torch.no_grad():
        out = sdid(tokens, torch.tensor([0.5, 0.5]), stats)
        assert out.shape == (2, 6, 3, 3)
        assert not torch.equal(out, sdid(tokens, torch.tensor([0.9, 0.9])))
        assert torch.allclose(sdid(tokens.flip(0), torch.tensor([0.5, 0.5])).flip(0), out)  # per image
        other = tokens.clone()
        other[0, 1, 1] = (tokens[0, 1, 1] + 1) % 7
        assert not torch.equal(sdid(other, torch.tensor([0.5, 0.5]))[0], out[0])
    assert set(stats) == {"e0", "e1", "g", "u"} and stats["e0"] > 0
    with pytest.raises(SpikediffError, match=r"token grids of shape \(N, 3, 3\)"):
        sdid(torch.zeros(2, 4, 4, dtype=torch.long), 0.5)


TINY = dict(data="digits", vq_steps=120, steps=120, batch_size=32, lr=2e-3, warmup=10, checkpoint_every=60,
            log_every=20, restart_every=20, device="cpu")


def _tiny_cfg(**kw):
    return VQTrainConfig(**{**TINY, **kw}, vq=VQConfig(channels=8, codebook_size=16, code_dim=4),
                         sdid=TokenDenoiserConfig(channels=8, hidden=16))


def test_two_stage_training_learns_resumes_and_samples(tmp_path):
    path = train_spiking_vq(_tiny_cfg(), tmp_path / "run", progress=False, log=lambda _m: None)
    vq_log = [json.loads(line) for line in (tmp_path / "run" / "vq" / "log.jsonl").read_text().splitlines()]
    sdid_log = [json.loads(line) for line in (tmp_path / "run" / "sdid" / "log.jsonl").read_text().splitlines()]
    assert vq_log[-1]["recon_mse"] < vq_log[0]["recon_mse"], (vq_log[0], vq_log[-1])
    held_out = to_model_range(load_images("digits", "test")[0][:200])
    vq_cfg = VQConfig.from_dict(load_raw(tmp_path / "run" / "vq" / "model.pt")["model_config"])
    torch.manual_seed(0)
    untrained, trained = SpikingVQVAE(vq_cfg), load_model(path)[0].vq
    with torch.no_grad():
        errors = [float(torch.nn.functional.mse_loss(m.decode(m.encode(held_out)), held_out)) for m in (untrained, trained)]
    assert errors[1] < 0.6 * errors[0], errors
    assert vq_log[-1]["codes_used"] >= 8  # restarts keep the codebook in use
    assert sdid_log[-1]["loss_avg"] < math.log(16)  # better than a uniform guess over the codes
    model, schedule, ckpt = load_model(path)
    assert schedule is None and ckpt["train"]["step"] == 120 and ckpt["train"]["vq_step"] == 120
    sample = kinds.get("spiking-vq").sample_torch
    images = sample(model, None, 5, 4, seed=0, progress=False)
    assert images.shape == (5, 1, 8, 8) and images.abs().max() <= 1
    assert torch.equal(images, sample(model, None, 5, 4, seed=0, progress=False))

    # an interrupted second stage resumes to the same weights as the straight run
    train_spiking_vq(_tiny_cfg(steps=50), tmp_path / "resumed", progress=False, log=lambda _m: None)
    messages = []
    train_spiking_vq(_tiny_cfg(), tmp_path / "resumed", progress=False, log=messages.append)
    assert any("resuming" in m and "sdid" in m for m in messages), messages
    a, b = load_raw_model(tmp_path / "run"), load_raw_model(tmp_path / "resumed")
    for key in a:
        assert torch.equal(a[key], b[key]), key

    with pytest.raises(CheckpointError, match="a 'sdid' checkpoint, not a sampler"):
        load_model(tmp_path / "run" / "sdid" / "model.pt")

    # the decoder stage with a discriminator: it learns alone, then the decoder feels it; a stopped run resumes
    # (decoder, EMA and the discriminator with its optimizer) to what the unbroken run reaches
    from spikediff.train.decoder_trainer import DecoderTrainConfig, train_latent_decoder

    def adversarial(out, steps, log=lambda _m: None, **kw):
        cfg = DecoderTrainConfig(data="digits", init=str(path), steps=steps, batch_size=8, decay_steps=4, warmup=1,
                                 adversarial=0.5, adversarial_from=2, log_every=1)
        return train_latent_decoder(cfg, tmp_path / out, progress=False, log=log, **kw)

    straight = adversarial("adv", 4)
    log = [json.loads(line) for line in (tmp_path / "adv" / "decoder" / "log.jsonl").read_text().splitlines()]
    assert all("disc_loss" in r for r in log) and [("adversarial_balance" in r) for r in log] == [False] * 2 + [True] * 2
    assert all(r["adversarial_balance"] > 0 for r in log[2:])
    adversarial("adv-resumed", 2)
    compact = tmp_path / "resume.pt"  # the compact file, as committed or carried to another machine
    compact.write_bytes((tmp_path / "adv-resumed" / "decoder" / "resume.pt").read_bytes())
    resumed = adversarial("adv-resumed", 4)
    messages = []
    moved = adversarial("adv-moved", 4, log=messages.append, resume_from=compact)
    assert any("continuing from the compact file" in m and "step 2/4" in m for m in messages), messages
    carried = load_raw(moved.parent / "decoder" / "last.pt")
    assert carried["step"] == 4 and carried["companion"]["optimizer"]["state"][0]["step"] == 4
    a, b = (load_raw(p.parent / "decoder" / "last.pt") for p in (straight, resumed))
    for part in ("model", "ema_full"):
        assert all(torch.equal(v, b[part][k]) for k, v in a[part].items() if torch.is_tensor(v)), part
    assert all(torch.equal(v, b["companion"]["net"][k]) for k, v in a["companion"]["net"].items())
    assert a["companion"]["optimizer"]["state"][0]["step"] == 4  # the discriminator stepped from the first step
    assert load_raw(straight)["train"]["decoder"]["adversarial"] == 0.5
    before = load_raw(path)["model"]["vq"]
    assert any(not torch.equal(v, load_raw(straight)["model"]["vq"][k]) for k, v in before.items()
               if k.startswith("decoder."))
    with pytest.raises(SpikediffError, match="--adversarial-from needs --adversarial"):
        DecoderTrainConfig(init=str(path), adversarial_from=3).validate()
    with pytest.raises(SpikediffError, match="adversarial=0.5.*asks for None"):
        train_latent_decoder(DecoderTrainConfig(data="digits", init=str(path), steps=5, batch_size=8, decay_steps=4,
                                                warmup=1), tmp_path / "adv", progress=False, log=lambda _m: None)


def test_both_stages_decay_and_move_to_another_machine(tmp_path):
    """The VQ-SVAE stage (the long one) anneals with --vq-decay-steps and continues from its compact file in an
    empty --out, the SDID stage then starting there as usual; the SDID stage continues from its own compact
    file, which carries the finished VQ-SVAE. Files of other options are refused in one line."""
    from spikediff.train.trainer import learning_rate

    cfg = _tiny_cfg(vq_steps=40, steps=4, vq_decay_steps=30, lr_min=1e-5, checkpoint_every=20, log_every=10)
    stage = dataclasses.replace(cfg, decay_steps=cfg.vq_decay_steps)
    assert learning_rate(stage, 30) == learning_rate(stage, 39) == pytest.approx(1e-5)  # reached, then kept
    train_spiking_vq(dataclasses.replace(cfg, vq_steps=20), tmp_path / "first", progress=False, log=lambda _m: None)
    compact = tmp_path / "vq-resume.pt"  # as committed, or carried to another machine
    compact.write_bytes((tmp_path / "first" / "vq" / "resume.pt").read_bytes())
    messages = []
    path = train_spiking_vq(cfg, tmp_path / "moved", progress=False, log=messages.append, resume_from=compact)
    assert any("continuing from the compact file" in m and "step 20/40" in m for m in messages), messages
    done = load_raw(path)["train"]
    assert (done["vq_step"], done["step"], done["vq_decay_steps"]) == (40, 4, 30)
    log = [json.loads(line) for line in (tmp_path / "moved" / "vq" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [30, 40]  # the moved run's own records, from where it went on
    # at its last step already: the stage's files are written, nothing trained
    again = train_spiking_vq(dataclasses.replace(cfg, vq_steps=20), tmp_path / "done", progress=False,
                             log=lambda _m: None, resume_from=compact)
    assert load_raw(again)["train"]["vq_step"] == 20 and (tmp_path / "done" / "vq" / "last.pt").is_file()
    with pytest.raises(SpikediffError, match="vq_decay_steps=30, this command asks for 25"):
        train_spiking_vq(dataclasses.replace(cfg, vq_decay_steps=25), tmp_path / "other", progress=False,
                         log=lambda _m: None, resume_from=compact)
    with pytest.raises(SpikediffError, match="--vq-decay-steps 5 must be after the warm-up"):
        dataclasses.replace(cfg, vq_decay_steps=5).validate()

    # the SDID stage moves too: its compact file carries the finished VQ-SVAE in float32
    sdid_file = tmp_path / "sdid-resume.pt"
    sdid_file.write_bytes((tmp_path / "moved" / "sdid" / "resume.pt").read_bytes())
    messages = []
    longer = dataclasses.replace(cfg, steps=6)
    path = train_spiking_vq(longer, tmp_path / "sdid-moved", progress=False, log=messages.append,
                            resume_from=sdid_file)
    assert any("came finished" in m for m in messages) and any("step 4/6" in m for m in messages), messages
    assert not (tmp_path / "sdid-moved" / "vq" / "last.pt").exists()  # no VQ stage trained here
    before, after = load_raw(tmp_path / "moved" / "model.pt"), load_raw(path)
    assert all(torch.equal(v, after["model"]["vq"][k]) for k, v in before["model"]["vq"].items())
    assert (after["train"]["vq_step"], after["train"]["step"]) == (40, 6)
    messages = []  # the same command again in that directory: nothing retrained
    train_spiking_vq(longer, tmp_path / "sdid-moved", progress=False, log=messages.append)
    assert any("came finished" in m for m in messages) and any("already trained" in m for m in messages), messages
    other = dataclasses.replace(longer, vq=dataclasses.replace(longer.vq, code_dim=5))
    with pytest.raises(SpikediffError, match="its VQ-SVAE differs from this command's in code_dim"):
        train_spiking_vq(other, tmp_path / "sdid-other", progress=False, log=lambda _m: None, resume_from=sdid_file)


def load_raw_model(run):
    return load_raw(run / "sdid" / "last.pt")["model"]


def test_cli_trains_and_samples_spiking_vq(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "spiking-vq", "--data", "digits", "--out", str(run), "--vq-steps", "20",
                 "--steps", "20", "--batch-size", "16", "--channels", "4", "--hidden", "8", "--sdid-channels", "4",
                 "--codebook-size", "8", "--code-dim", "4", "--device", "cpu", "--quiet"]) == 0
    ckpt = load_model(run / "model.pt")[2]
    assert ckpt["model_config"]["vq"]["codebook_size"] == 8 and ckpt["model_config"]["sdid"]["channels"] == 4
    capsys.readouterr()
    assert main(["sample", str(run / "model.pt"), "-n", "3", "--steps", "4", "-o", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 samples" in out and "denoiser: 4 unmasking steps" in out and "asg" in out
    assert (tmp_path / "g.png").stat().st_size > 0
    assert main(["sample", str(run / "model.pt"), "--backend", "lava", "--fixed-point", "-n", "2", "--steps", "2",
                 "--lava-target", "sim", "-o", str(tmp_path / "l.png")]) == 0
    out = capsys.readouterr().out
    assert "tokens, images and spike counts identical to spikediff's bit-exact simulator" in out
    report = json.loads((tmp_path / "l.counters.json").read_text())
    assert report["bit_exact_vs_simulator"] and set(report["decoder"]) == {"asg", "h1", "h2", "h3"}
    assert main(["export", str(run / "model.pt"), "-o", str(tmp_path / "m.nir")]) == 0
    assert (tmp_path / "m.denoiser.nir").is_file() and (tmp_path / "m.decoder.nir").is_file()
    capsys.readouterr()
    assert main(["report", str(run / "model.pt"), "-n", "3", "--steps", "2", "-o", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    assert "loihi2" in printed and "ac_mac_45nm" in printed
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    by_profile = {c["profile"]: c for c in rep["cost"]}
    parts = {p: {c["profile"]: c for c in rep["cost_by_network"][p]} for p in ("denoiser", "decoder")}
    for prof, c in by_profile.items():  # an image costs both networks' runs
        total = parts["denoiser"][prof]["energy_per_image_J"] + parts["decoder"][prof]["energy_per_image_J"]
        assert c["energy_per_image_J"] == pytest.approx(total) and total > 0
    assert rep["chips"]["loihi2"]["cores"] == rep["chips"]["loihi2"]["denoiser"] + rep["chips"]["loihi2"]["decoder"]
    assert rep["events_per_image"]["denoiser"]["denoising_steps"] == 2
    assert rep["events_per_image"]["decoder"]["denoising_steps"] == 1
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# Hardware report (spiking-vq)")
    assert main(["eval", str(run), "-n", "4", "--steps", "2", "--backend", "sim", "--ref-split", "test",
                 "--ref-n", "40", "--quiet"]) == 0
    res = json.loads((run / "eval" / "eval-sim-2steps-temp0.6.json").read_text())
    assert res["n"] == 4 and res["data"] == "digits" and res["fid"] > 0 and res["snn_steps"] == 4
    assert res["temperature"] == 0.6 and any((run / "eval").glob("samples-sim-2steps-seed0-temp0.6-fx*"))
    assert main(["export", str(run / "model.pt"), "-o", str(tmp_path / "m.nir"), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.denoiser.onnx").is_file() and (tmp_path / "m.decoder.onnx").is_file()
    assert main(["sample", str(run / "model.pt"), "--steps", "5", "-o", str(tmp_path / "s.png")]) == 2
    assert "1 to 4 steps" in capsys.readouterr().err

    # the decoder stage: the decoder trained again on the frozen encoder's tokens, in its deployed form, QAT
    dec = tmp_path / "dec"
    assert main(["train", "--model", "latent-decoder", "--init", str(run / "model.pt"), "--data", "digits",
                 "--steps", "3", "--batch-size", "8", "--qat-from", "1", "--out", str(dec), "--quiet"]) == 0
    assert "reconstruction MSE" in capsys.readouterr().out
    # on the deployed grid, the first layer's folded weight (codebook folded in) included
    scales = torch.load(dec / "decoder" / "last.pt", weights_only=False)["qat_scales"]
    assert {"gen", "conv_h1", "conv_ro"} <= set(scales)
    before, after = load_raw(run / "model.pt"), load_raw(dec / "model.pt")
    assert after["kind"] == "spiking-vq" and after["train"]["decoder"]["step"] == 3
    assert after["trained_on_grid"] == ["decoder"] and "trained_on_grid" not in before  # bias-corrected on its grid
    from spikediff.export.deployment import compile_sampler
    from spikediff.export.nir_graph import read_sampler, sampler_graphs

    assert main(["export", str(dec / "model.pt"), "-o", str(tmp_path / "q.nir")]) == 0  # the record travels in NIR
    graphs = read_sampler(tmp_path / "q.decoder.nir")
    assert graphs["decoder"].metadata["trained_on_grid"] and "trained_on_grid" not in graphs["denoiser"].metadata
    from_file = compile_sampler(graphs, fixed_point=True).networks["decoder"].fixed.digest()
    assert from_file == compile_sampler(sampler_graphs(load_model(dec / "model.pt")[0]),
                                        fixed_point=True).networks["decoder"].fixed.digest()
    for key, value in before["model"]["vq"].items():  # only the decoder's synapses moved
        moved = key.startswith("decoder.") and key.endswith(("weight", "bias"))
        assert torch.equal(value, after["model"]["vq"][key]) != moved, key
    assert all(torch.equal(v, after["model"]["sdid"][k]) for k, v in before["model"]["sdid"].items())
    assert main(["sample", str(dec / "model.pt"), "--backend", "lava", "--fixed-point", "-n", "2", "--steps", "2",
                 "--lava-target", "sim", "-o", str(tmp_path / "d.png")]) == 0
    assert "identical to spikediff's bit-exact simulator" in capsys.readouterr().out
    assert main(["train", "--model", "latent-decoder", "--init", str(run / "model.pt"), "--data", "digits",
                 "--latent-noise", "0.1", "--out", str(tmp_path / "noisy"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--latent-noise" in err and "reads tokens" in err and len(err.strip().splitlines()) == 1

    # a wider decoder, trained from scratch on the same tokens; the encoder, codebook and SDID stay
    wide = tmp_path / "wide"
    assert main(["train", "--model", "latent-decoder", "--init", str(run / "model.pt"), "--data", "digits",
                 "--steps", "3", "--batch-size", "8", "--decoder-channels", "6", "--out", str(wide), "--quiet"]) == 0
    widened = load_raw(wide / "model.pt")
    assert widened["model_config"]["vq"]["decoder_channels"] == 6 and widened["train"]["decoder"]["channels"] == 6
    assert widened["model_config"]["vq"]["channels"] == 4
    assert widened["model"]["vq"]["decoder.conv_h1.weight"].shape == (6, 6, 3, 3)
    assert all(torch.equal(v, widened["model"]["vq"][k]) for k, v in before["model"]["vq"].items()
               if not k.startswith("decoder."))
    assert main(["sample", str(wide / "model.pt"), "--backend", "lava", "--fixed-point", "-n", "2", "--steps", "2",
                 "--unmask", "confidence",
                 "--lava-target", "sim", "-o", str(tmp_path / "w.png")]) == 0
    assert "identical to spikediff's bit-exact simulator" in capsys.readouterr().out
    assert main(["train", "--model", "spiking-vq", "--decoder-channels", "6", "--data", "digits", "--out",
                 str(tmp_path / "bad-width"), "--quiet"]) == 2
    assert "--decoder-channels is an option of --model latent-decoder" in capsys.readouterr().err
    assert main(["train", "--model", "spiking-vq", "--adversarial-from", "0", "--data", "digits", "--out",
                 str(tmp_path / "bad-adv"), "--quiet"]) == 2
    assert "--adversarial-from is an option of --model latent-decoder" in capsys.readouterr().err
    assert main(["train", "--model", "latent-decoder", "--init", str(run / "model.pt"), "--resume-from",
                 str(run / "model.pt"), "--data", "digits", "--out", str(tmp_path / "bad-resume"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not the compact resume file of a decoder run" in err and len(err.strip().splitlines()) == 1

    # the SDID fine-tuned quantization-aware on the sampler's own VQ-SVAE (no VQ stage), the new decoder kept
    tuned = tmp_path / "tuned"
    assert main(["train", "--model", "spiking-vq", "--init", str(dec / "model.pt"), "--data", "digits", "--steps", "3",
                 "--batch-size", "8", "--lr", "2e-4", "--qat-from", "1", "--warmup", "1", "--decay-steps", "3",
                 "--lr-min", "1e-5", "--sdid-channels", "6", "--hidden", "12", "--feedback", "--out", str(tuned),
                 "--quiet"]) == 0
    assert not (tuned / "vq").exists() and (tuned / "sdid" / "resume.pt").is_file()
    assert set(torch.load(tuned / "sdid" / "last.pt", weights_only=False)["qat_scales"]) >= {"fc_out"}
    start, end = load_raw(dec / "model.pt"), load_raw(tuned / "model.pt")
    assert all(torch.equal(v, end["model"]["vq"][k]) for k, v in start["model"]["vq"].items())
    assert any(not torch.equal(v, end["model"]["sdid"][k]) for k, v in start["model"]["sdid"].items()
               if v.is_floating_point())
    assert end["train"]["init"] == str(dec / "model.pt") and end["train"]["step"] == 3
    assert (end["train"]["decay_steps"], end["train"]["lr_min"]) == (3, 1e-5)  # the SDID's learning-rate decay
    assert end["model_config"]["vq"] == start["model_config"]["vq"]  # the SDID widened from 4 x 8 to 6 x 12
    grown = ("channels", "hidden", "feedback")
    assert {k: v for k, v in end["model_config"]["sdid"].items() if k not in grown} == {
        k: v for k, v in start["model_config"]["sdid"].items() if k not in grown}
    assert [end["model_config"]["sdid"][k] for k in grown] == [6, 12, True]  # widened from 4 x 8, feedback added
    grid = end["model_config"]["sdid"]["grid"]
    assert end["model"]["sdid"]["fc_1.weight"].shape == (12, 6, grid, grid) and end["train"]["sdid_channels"] == 6
    assert end["model"]["sdid"]["fc_gu.weight"].abs().sum() > 0 and end["train"]["sdid_feedback"] is True
    assert end["trained_on_grid"] == ["decoder", "denoiser"]  # the init's quantization-aware decoder, kept
    assert main(["sample", str(tuned / "model.pt"), "-n", "2", "--steps", "2", "-o", str(tmp_path / "t.png")]) == 0
    capsys.readouterr()
    # ... continued on "another machine" from its compact resume file, one step further
    moved = tmp_path / "moved"
    assert main(["train", "--model", "spiking-vq", "--init", str(dec / "model.pt"), "--data", "digits", "--steps", "4",
                 "--batch-size", "8", "--lr", "2e-4", "--qat-from", "1", "--warmup", "1", "--decay-steps", "3",
                 "--lr-min", "1e-5", "--sdid-channels", "6", "--hidden", "12", "--feedback", "--resume-from",
                 str(tuned / "sdid" / "resume.pt"), "--out", str(moved)]) == 0
    assert "continuing from the compact file" in capsys.readouterr().out
    assert load_raw(moved / "model.pt")["train"]["step"] == 4
    for bad, with_init, message in ((dec / "model.pt", True, "not the compact resume file of a sdid run"),
                                    (tuned / "sdid" / "resume.pt", False, "carries no VQ-SVAE"),
                                    (dec / "decoder" / "resume.pt", False,
                                     "not the compact resume file of a vq or sdid run")):
        init = ["--init", str(dec / "model.pt")] if with_init else []
        assert main(["train", "--model", "spiking-vq", *init, "--data", "digits", "--resume-from", str(bad),
                     "--out", str(tmp_path / "bad-sdid-resume"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--model", "spiking-vq", "--init", "mnist", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a spiking-vq sampler" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--model", "spiking-vq", "--init", str(dec / "model.pt"), "--data", "digits",
                 "--sdid-channels", "3", "--out", str(tmp_path / "narrow"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--sdid-channels 3: narrower than the SDID of --init" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--model", "latent-ddim", "--sdid-channels", "8", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--sdid-channels is an option of --model spiking-vq" in capsys.readouterr().err
    assert main(["train", "--model", "latent-ddim", "--feedback", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--feedback is an option of --model spiking-vq" in capsys.readouterr().err
    assert main(["train", "--model", "latent-ddim", "--vq-decay-steps", "800", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    assert "--vq-decay-steps is an option of --model spiking-vq" in capsys.readouterr().err
    assert main(["train", "--model", "spiking-vq", "--init", str(dec / "model.pt"), "--vq-decay-steps", "800",
                 "--data", "digits", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "an --init run has no VQ-SVAE stage" in capsys.readouterr().err


def test_a_widened_decoder_starts_as_the_old_one():
    from spikediff.models.spiking_vq import SpikingDecoder
    from spikediff.train.widening import widen

    torch.manual_seed(1)
    cfg = VQConfig(image_size=8, channels=4, codebook_size=8, code_dim=4)
    old, new = SpikingDecoder(cfg), SpikingDecoder(VQConfig(**{**cfg.to_dict(), "decoder_channels": 12}))
    codes = 2 * torch.randn(6, 4, 2, 2)
    assert not torch.allclose(old(codes), new(codes))
    widen(old, new)
    stats_old, stats_new = {}, {}
    assert torch.equal(old(codes, stats_old), new(codes, stats_new))  # same function ...
    assert stats_new["h2"] > stats_old["h2"] > 0  # ... while the added neurons fire too
    assert new.conv_h2.weight[:8, 8:].abs().sum() == 0 and new.conv_h2.weight[8:, :8].abs().sum() > 0


def test_a_widened_sdid_starts_as_the_old_one():
    from spikediff.train.vq_trainer import widened_state

    torch.manual_seed(2)
    old = SpikingTokenDenoiser(TokenDenoiserConfig(codebook_size=6, grid=3, channels=8, hidden=16))
    wide_cfg = TokenDenoiserConfig(codebook_size=6, grid=3, channels=12, hidden=24)
    new = SpikingTokenDenoiser(wide_cfg)
    tokens, ratio = torch.randint(0, 7, (5, 3, 3)), torch.rand(5)
    assert not torch.allclose(old(tokens, ratio), new(tokens, ratio))
    new.load_state_dict(widened_state(old, wide_cfg, seed=0))
    stats_old, stats_new = {}, {}
    assert torch.equal(old(tokens, ratio, stats_old), new(tokens, ratio, stats_new))  # the same logits ...
    assert stats_new["e1"] > stats_old["e1"] > 0 and stats_new["g"] > stats_old["g"]  # ... the new neurons fire
    same = widened_state(old, old.config, seed=0)
    assert same.keys() == old.state_dict().keys() and all(torch.equal(v, old.state_dict()[k]) for k, v in same.items())
    # feedback added: the dense layer becomes a convolution onto a 1 x 1 map (the same weights) and its feedback
    # into the grid layer starts at zero, so the logits stay; once the feedback is trained, the grid layer moves
    fed_cfg = dataclasses.replace(wide_cfg, feedback=True)
    fed = SpikingTokenDenoiser(fed_cfg)
    fed.load_state_dict(widened_state(old, fed_cfg, seed=0))
    assert fed.fc_1.weight.shape == (24, 12, 3, 3) and fed.fc_gu.weight.abs().sum() == 0
    assert torch.equal(old(tokens, ratio), fed(tokens, ratio))
    with torch.no_grad():
        fed.fc_gu.weight.normal_(0, 1.0)
    stats_fed = {}
    assert not torch.equal(old(tokens, ratio), fed(tokens, ratio, stats_fed)) and stats_fed["u"] != stats_new["u"]


def _deployable_parts():
    """The SDID denoiser and the VQ-SVAE decoder of a tiny untrained model, with one host input batch each."""
    torch.manual_seed(0)
    vq = SpikingVQVAE(VQConfig(image_size=8, channels=4, codebook_size=6, code_dim=3))
    torch.nn.init.normal_(vq.quantizer.codebook.weight)
    sdid = SpikingTokenDenoiser(TokenDenoiserConfig(codebook_size=6, grid=2, channels=8, hidden=16))
    fed = SpikingTokenDenoiser(TokenDenoiserConfig(codebook_size=6, grid=3, channels=8, hidden=16, feedback=True))
    torch.nn.init.normal_(fed.fc_gu.weight, 0, 1.0)  # the feedback must move the grid layer's spikes
    tokens = torch.tensor([[[0, 6], [6, 6]], [[1, 2], [3, 6]], [[5, 4], [0, 2]]])
    sdid_in = sdid.make_input(tokens, torch.tensor([0.75, 0.25, 0.0]))
    fed_in = fed.make_input(torch.from_numpy(np.random.default_rng(1).integers(0, 7, (3, 3, 3))),
                            torch.tensor([0.75, 0.25, 0.0]))
    dec_in = vq.quantizer.lookup(tokens.clamp(max=5)).detach()
    return [(sdid, sdid_in), (vq.decoder, dec_in), (fed, fed_in)]


@pytest.mark.parametrize("part", [0, 1, 2], ids=["sdid", "decoder", "sdid-feedback"])
def test_deployable_parts_export_to_nir_and_run_on_lava_like_pytorch(part, tmp_path):
    """NIR file round trip (nirtorch interpreter), then Lava's float simulator spike for spike."""
    import nir

    from spikediff.export.deployment import compile_graph
    from spikediff.export.nir_graph import to_nir
    from spikediff.export.nir_torch import to_torch
    from spikediff.runtime.build import build
    from spikediff.runtime.run import run_windows

    net, inp = _deployable_parts()[part]
    nir.write(tmp_path / "part.nir", to_nir(net))
    graph = nir.read(tmp_path / "part.nir")
    assert graph.metadata["network"] == type(net).__name__
    executor, state, outs = to_torch(graph), None, []
    stats_per_input = []
    with torch.no_grad():
        for _ in range(net.config.num_steps):
            out, state = executor(inp, state)
            outs.append(out)
        expected = [net.run_graph(inp[i:i + 1], stats_per_input.append({}) or stats_per_input[-1])[0].numpy()
                    for i in range(len(inp))]
    torch.testing.assert_close(torch.stack(outs).mean(0), torch.from_numpy(np.stack(expected)), rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 0.01

    result = run_windows(build(compile_graph(graph)), inp.numpy(), record_spikes=True)
    for i in range(len(inp)):
        np.testing.assert_allclose(result["readout"][i].mean(0).reshape(-1), expected[i], rtol=0, atol=1e-5)
    for name in net.spiking_layers:
        torch_counts = [s[name] for s in stats_per_input]
        assert sum(torch_counts) > 0, name
        np.testing.assert_array_equal(result["spikes"][name].sum(1), torch_counts, err_msg=name)


@pytest.fixture(scope="module")
def tiny_vq_model():
    """A tiny spiking-vq sampler with weights that fire (untrained), in float64 for exact comparisons; its SDID
    with feedback (the SDID without it is checked on Lava alone above, and ships in fixed point)."""
    from spikediff.models import SpikingVQDiffusion

    torch.manual_seed(0)
    vq = SpikingVQVAE(VQConfig(image_size=8, channels=4, codebook_size=6, code_dim=3))
    torch.nn.init.normal_(vq.quantizer.codebook.weight)
    sdid = SpikingTokenDenoiser(TokenDenoiserConfig(codebook_size=6, grid=2, channels=8, hidden=16, feedback=True))
    torch.nn.init.normal_(sdid.fc_out.weight, 0, 2.0)  # confident logits: the draws then depend on them
    torch.nn.init.normal_(sdid.fc_gu.weight, 0, 1.0)
    return SpikingVQDiffusion(vq, sdid, "cosine").double()


def test_float_lava_sampler_equals_pytorch_token_for_token(tiny_vq_model):
    from spikediff.export.deployment import compile_sampler
    from spikediff.export.nir_graph import sampler_graphs
    from spikediff.models.spiking_vq import TokenDecoder
    from spikediff.runtime.run import sample_lava

    sd = compile_sampler(sampler_graphs(tiny_vq_model))
    lava = sample_lava(sd, 3, 3, seed=5, target="sim", progress=False)
    stats = {}
    expected = sample_tokens(tiny_vq_model.sdid, 3, steps=3, seed=5, progress=False, stats=stats)
    assert torch.equal(torch.from_numpy(lava["tokens"]), expected)
    assert len(torch.unique(expected)) > 1
    for name in ("e0", "e1", "g", "u"):
        assert lava["counters"][name]["active"].sum() == stats[name] > 0, name
    dec = TokenDecoder(tiny_vq_model.vq.decoder, tiny_vq_model.vq.quantizer.codebook.weight.detach())
    with torch.no_grad():
        images = dec(dec.one_hot(expected)).clamp(-1, 1).numpy()
        reference = tiny_vq_model.vq.decode(expected).numpy()  # the training-time decoder, codebook lookup on host
    np.testing.assert_allclose(lava["images"], images, rtol=0, atol=1e-5)
    np.testing.assert_allclose(images, reference, rtol=0, atol=1e-5)


def test_decoder_trains_in_its_deployed_form_on_the_chips_grid(tiny_vq_model):
    """The decoder stage trains the token decoder (codebook folded into its first layer) on the VQ-SVAE
    decoder's own parameters, and quantization-aware it runs the weights the chip gets, that folded one too:
    its output is then closer to the fixed-point simulator's than the float network's is."""
    from spikediff.export.deployment import compile_sampler
    from spikediff.export.nir_graph import sampler_graphs
    from spikediff.export.simulator import Simulator
    from spikediff.train.qat import QAT

    model = copy.deepcopy(tiny_vq_model)
    net, deployed = model.trainable_decoder(), kinds.of_model(model).networks(model)["decoder"][0]
    assert net.gen.weight is model.vq.decoder.gen.weight and net.conv_h1 is model.vq.decoder.conv_h1
    assert net.state_dict().keys() == model.vq.decoder.state_dict().keys()  # its checkpoints are the decoder's
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 6, (200, 2, 2)))
    inp = net.host_input(tokens)
    with torch.no_grad():
        np.testing.assert_allclose(net(inp).numpy(), deployed(deployed.one_hot(tokens.numpy())).numpy(), atol=1e-12)
        dep = compile_sampler(sampler_graphs(copy.deepcopy(model).float()), fixed_point=True).networks["decoder"]
        fixed = Simulator(dep).evaluate(inp.numpy())["readout_int"].double().mean(1).reshape(200, -1)
        fixed = fixed / dep.readout_scale()
        float_err = float(((net.run_graph(inp) - fixed) ** 2).mean())
        scales = QAT(model, role="decoder", net=net).update_scales()
        assert set(scales) == {"gen", "conv_h1", "conv_h2", "conv_h3", "conv_ro", "skip_ro"}
        assert scales["gen"] == dep.fixed.populations["asg"].scale / dep.fixed.input_scale
        qat_err = float(((net.run_graph(inp) - fixed) ** 2).mean())
    assert qat_err < 0.5 * float_err and float_err > 0
    net.qat_scales = None
    loss = ((net(inp) - 1) ** 2).mean()
    loss.backward()
    assert model.vq.decoder.gen.weight.grad is not None and model.vq.quantizer.codebook.weight.grad is None


def test_fixed_point_lava_sampler_equals_the_simulator(tiny_vq_model):
    from spikediff.export.deployment import compile_sampler
    from spikediff.export.nir_graph import sampler_graphs
    from spikediff.hardware_sim.sampler import same_as_lava, sample_sim
    from spikediff.runtime.run import sample_lava

    sd = compile_sampler(sampler_graphs(copy.deepcopy(tiny_vq_model).float()), fixed_point=True)
    sim = sample_sim(sd, 3, 3, seed=2, batch_size=2)
    lava = sample_lava(sd, 3, 3, seed=2, target="sim", progress=False)
    assert same_as_lava(sim, lava)
    assert sum(c["active"].sum() for c in sim["counters"].values()) > 0
    assert sum(c.sum() for c in sim["final_counters"].values()) > 0
