"""The image objectives on tiny backbones: each trains (finite loss, gradients reach the
backbone), declares counts that match its batch, keeps its online probe off the backbone, and
BYOL's target follows its moving-average formula without ever receiving a gradient."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from selfsup.encoders.image import ImageConfig, image_shape
from selfsup.keys import IMAGES, LABELS, PIXEL_MASK, VIEWS
from selfsup.objectives import OBJECTIVES, build_objective
from selfsup.objectives.base import batch_loss

IMAGE_OBJECTIVES = [n for n, o in OBJECTIVES.items() if getattr(o, "modality", "") == "image"]
SMALL_HEADS = {"proj_hidden": 32, "proj_dim": 16}


def tiny_model(arch: str = "resnet") -> ImageConfig:
    shape = "resnet-tiny" if arch == "resnet" else "vit-tiny"
    return ImageConfig(**image_shape(shape))


def objective_config(name: str, **kw):
    cls = OBJECTIVES[name].Config
    fields = cls.__dataclass_fields__
    small = {k: v for k, v in SMALL_HEADS.items() if k in fields}
    if "pred_hidden" in fields:
        small["pred_hidden"] = 8
    if "hidden" in fields:
        small["hidden"] = 16
    if name == "pixels":
        small.update(palette=8, side=8)
    return cls(**{**small, **kw})


def build(name: str, arch: str = "resnet", **kw):
    torch.manual_seed(0)
    model = build_objective(objective_config(name, **kw), tiny_model(arch))
    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.prepare((images.permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy(),
                  torch.Generator().manual_seed(2))  # fmt: skip
    return model


def make_batch(model, B: int = 8, seed: int = 3, labels: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {IMAGES: torch.rand(B, 3, 32, 32, generator=g)}
    if labels:
        batch[LABELS] = torch.randint(0, 10, (B,), generator=g)
    corrupt = model.image_needs().corrupt
    return corrupt(batch, torch.Generator().manual_seed(seed + 1)) if corrupt else batch


def test_every_image_method_is_registered():
    assert set(IMAGE_OBJECTIVES) >= {"rotation", "relpatch", "pixels", "simclr", "byol",
                                     "simsiam", "barlow", "vicreg"}  # fmt: skip


@pytest.mark.parametrize("name", IMAGE_OBJECTIVES)
def test_objective_trains_and_its_gradients_reach_the_backbone(name):
    model = build(name, probe_classes=10)
    model.train()
    batch = make_batch(model)
    out, counts = model(batch), model.counts(batch)
    assert set(out) == set(model.terms), set(out) ^ set(model.terms)
    assert all(model.terms[k] in counts for k in out)
    loss = batch_loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), name
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert model.batch_level == (name != "pixels")  # BatchNorm (the pixel model has none)


@pytest.mark.parametrize("name", IMAGE_OBJECTIVES)
def test_objective_runs_on_a_vit_in_eval_mode(name):
    model = build(name, arch="vit")
    model.eval()
    with torch.no_grad():
        out = model(make_batch(model, labels=False))
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in out.values())


def test_online_probe_never_trains_the_backbone():
    model = build("simclr", probe_classes=10)
    batch = make_batch(model)
    model(batch)["probe_loss"].backward()
    assert model.probe.weight.grad is not None and model.probe.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.projector.parameters())


def test_no_probe_without_labels():
    model = build("vicreg", probe_classes=0)
    assert model.probe is None and "probe_loss" not in model.terms


def test_counts_match_the_batch():
    simclr = build("simclr", n_views=3)
    b = make_batch(simclr, B=6)
    assert b[VIEWS].shape[:2] == (6, 3)
    assert simclr.counts(b)["anchors"] == 18 and simclr.counts(b)["labelled"] == 6
    byol = build("byol", n_views=3)
    assert byol.counts(make_batch(byol, B=5))["pairs"] == 5 * 3 * 2
    rot = build("rotation")
    assert rot.counts(make_batch(rot, B=4))["predictions"] == 16
    pix = build("pixels")
    b = make_batch(pix, B=4)
    assert pix.counts(b)["predicted"] == int(b[PIXEL_MASK].sum()) > 0


def test_rotation_views_are_the_same_image_rotated():
    model = build("rotation")
    v = make_batch(model, B=3)[VIEWS]  # (3, 4, C, H, W)
    for r in range(4):
        assert torch.equal(v[:, r], torch.rot90(v[:, 0], r, dims=(-2, -1)))


def test_byol_target_gets_no_gradient_and_follows_the_ema_formula():
    model = build("byol", ema=0.9)
    model.set_total_steps(10)
    batch = make_batch(model)
    batch_loss(model, batch).backward()
    target = list(model.target_encoder.parameters()) + list(model.target_projector.parameters())
    assert all(p.grad is None and not p.requires_grad for p in target)
    # one optimizer step on the online network, then the EMA update
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    before = [p.clone() for p in model.target_encoder.parameters()]
    tau = model.rate()
    assert tau == pytest.approx(0.9)  # step 0: the base rate
    model.after_step()
    for old, new, online in zip(before, model.target_encoder.parameters(),
                                model.encoder.parameters(), strict=True):  # fmt: skip
        assert torch.allclose(new, tau * old + (1 - tau) * online, atol=1e-7)
    # the cosine schedule: 1 - (1 - 0.9) (cos(pi k / K) + 1) / 2
    model.ema_step.fill_(5)
    assert model.rate() == pytest.approx(1 - 0.1 * (math.cos(math.pi * 0.5) + 1) / 2)
    model.ema_step.fill_(10)
    assert model.rate() == pytest.approx(1.0)


def test_byol_schedule_lives_in_the_weights():
    model = build("byol")
    model.set_total_steps(7)
    model.after_step()
    state = model.state_dict()
    other = build("byol")
    other.load_state_dict(state)
    assert int(other.ema_step) == 1 and int(other.ema_total) == 7


def test_byol_without_predictor_is_the_identity_head():
    model = build("byol", predictor_layers=0)
    assert isinstance(model.predictor, torch.nn.Identity)


def test_vicreg_weights_remove_terms():
    model = build("vicreg", var_weight=0.0, cov_weight=0.0)
    out = model(make_batch(model))
    assert torch.allclose(out["vicreg_loss"], 25.0 * out["invariance"])


def test_simclr_accuracy_is_perfect_for_identical_views():
    model = build("simclr")
    model.eval()
    b = make_batch(model, B=6)
    b[VIEWS] = b[VIEWS][:, :1].expand(-1, 2, -1, -1, -1).contiguous()
    with torch.no_grad():
        out = model(b)
    assert float(out["contrastive_acc"]) == 12


def test_pixels_palette_is_fitted_and_kept_by_random_init():
    model = build("pixels")
    assert model.encoder.palette.abs().sum() > 0  # fitted by prepare
    assert "encoder.palette" in model.state_dict() and model.data_buffers == ("encoder.palette",)
    nxt = build("pixels", mode="next")
    assert nxt.encoder.causal
    assert nxt.counts(make_batch(nxt, B=2))["predicted"] == 2 * 64


@pytest.mark.parametrize("name", ["simclr", "barlow"])
def test_bad_settings_are_config_errors(name):
    from selfsup.errors import ConfigError

    with pytest.raises(ConfigError):
        build(name, n_views=1)
    with pytest.raises(ConfigError):
        build(name, views="no-such-recipe")


def test_rotation_replaces_n_views():
    cfg = replace(objective_config("rotation"), n_views=2)
    model = build_objective(cfg, tiny_model())
    assert model.cfg.n_views == 4


# --------------------------------------------------------------------------------------------
# DeLoRes: the same losses on views of speech
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["audio-vicreg", "audio-barlow"])
def test_delores_trains_on_views_of_speech(name):
    from selfsup.data.audio import collate_frames
    from selfsup.encoders.audio import AudioConfig

    cfg = OBJECTIVES[name].Config(proj_hidden=32, proj_dim=16, crop=20)
    shape = AudioConfig(feature_dim=6, dim=16, n_layers=2, n_heads=2, ffn_dim=32, max_len=64)
    torch.manual_seed(0)
    model = build_objective(cfg, shape)
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(n, 6, generator=g).numpy() for n in (30, 12, 25, 40)]
    batch = collate_frames(clips)
    corrupt = model.audio_needs().corrupt
    views = corrupt(batch, torch.Generator().manual_seed(1))
    again = corrupt(batch, torch.Generator().manual_seed(1))
    assert views[VIEWS].shape == (4, 2, 20, 6)
    assert torch.equal(views[VIEWS], again[VIEWS])  # seeded: exact resume
    assert not torch.equal(views[VIEWS][:, 0], views[VIEWS][:, 1])
    loss = batch_loss(model, views)
    loss.backward()
    assert torch.isfinite(loss) and model.counts(views)["clips"] == 4
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_delores_is_vicreg_on_audio_from_the_cli():
    from selfsup.objectives import resolve_name

    assert resolve_name("vicreg", "audio") == "audio-vicreg"
    assert resolve_name("barlow", "audio") == "audio-barlow"
    assert resolve_name("vicreg", "image") == "vicreg" == resolve_name("vicreg", None)


def test_short_clips_are_repeated_to_fill_the_crop():
    from selfsup.corrupt.audio_views import crop_clips

    x = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 1)
    out = crop_clips(x, torch.tensor([3, 10]), 7, torch.tensor([0.0, 1.0]))
    assert out[0, :, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]  # 3 real frames, repeated
    assert out[1, :, 0].tolist() == [3, 4, 5, 6, 7, 8, 9]  # the last possible start
