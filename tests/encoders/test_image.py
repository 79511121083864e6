"""Image backbones: every parameter of every named shape trains, the encoder contract, ResNet-18's
parameter count from its definition, eval determinism, batch (in)dependence of BatchNorm and
GroupNorm, ViT pooling and smaller grids, input normalisation, config errors."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders.image import SHAPES, ImageConfig, build_image_encoder, image_shape
from selfsup.errors import ConfigError

VARIANTS = [
    *((name, {}) for name in SHAPES),
    ("resnet-tiny", {"norm": "group"}),
    ("vit-tiny", {"pool": "mean"}),
]
IDS = [name + "".join(f"-{v}" for v in kw.values()) for name, kw in VARIANTS]


def build(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_image_encoder(ImageConfig(**{**image_shape(name), **kw}))


def images(B: int = 2, side: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(B, 3, side, side, generator=torch.Generator().manual_seed(seed))


def tokens_of(cfg: ImageConfig, side: int = 32) -> int:
    if cfg.arch == "resnet":
        return (side // 2 ** (len(cfg.widths) - 1)) ** 2
    return (side // cfg.patch) ** 2 + (cfg.pool == "cls")


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_every_parameter_gets_a_gradient(name, kw):
    model = build(name, **kw).train()
    out = model(images())
    w = torch.randn(out["hidden"].shape, generator=torch.Generator().manual_seed(2))
    ((out["hidden"] * w).sum() + out["pooled"].square().sum()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_output_contract(name, kw):
    cfg = ImageConfig(**{**image_shape(name), **kw})
    model = build(name, **kw).eval()
    with torch.no_grad():
        out = model(images(B=3), return_all=True)
    T, D = tokens_of(cfg), model.dim
    assert model.image_size == 32
    assert out["hidden"].shape == (3, T, D)
    assert out["pooled"].shape == (3, D)
    assert out["padding_mask"].shape == (3, T) and out["padding_mask"].dtype == torch.bool
    assert not out["padding_mask"].any()
    states = out["all_hidden"]
    assert torch.equal(states[-1], out["hidden"])
    if cfg.arch == "resnet":
        assert D == cfg.widths[-1]
        assert len(states) == len(cfg.widths) + 1  # the stem and each stage
        sides = [32] + [32 // 2**i for i in range(len(cfg.widths))]
        widths = [cfg.widths[0], *cfg.widths]
        assert [s.shape for s in states] == [
            (3, s * s, w) for s, w in zip(sides, widths, strict=True)
        ]
        assert torch.allclose(out["pooled"], out["hidden"].mean(1), atol=1e-6)
    else:
        assert D == cfg.dim
        assert len(states) == cfg.n_layers + 1  # the embeddings and each block
        assert all(s.shape == (3, T, D) for s in states)
    assert "all_hidden" not in model(images(B=3))


def _resnet_parameters(widths, depths, channels: int = 3) -> int:
    """Weights of a CIFAR ResNet counted from its definition (arXiv:1512.03385 with the 3x3
    stem): bias-free convolutions, two values (weight, bias) per norm channel, option-B
    projection shortcuts where a block changes width or side, no classifier."""

    def conv(cin, cout, k):
        return cin * cout * k * k

    n = conv(channels, widths[0], 3) + 2 * widths[0]  # the stem
    cin = widths[0]
    for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        for j in range(depth):
            n += conv(cin, width, 3) + 2 * width + conv(width, width, 3) + 2 * width
            if cin != width or (i > 0 and j == 0):
                n += conv(cin, width, 1) + 2 * width
            cin = width
    return n


def test_resnet18_has_the_cifar_parameter_count():
    # torchvision's ResNet-18 has 11,689,512 parameters; less its classifier (512 x 1000 + 1000)
    # and the 7x7 stem's extra weights over a 3x3 one (64 x 3 x (49 - 9)) leaves 11,168,832.
    assert 11_689_512 - (512 * 1000 + 1000) - 64 * 3 * (49 - 9) == 11_168_832
    assert _resnet_parameters((64, 128, 256, 512), (2, 2, 2, 2)) == 11_168_832
    model = build("resnet18")
    assert sum(p.numel() for p in model.parameters()) == 11_168_832
    narrow = build("resnet-narrow")
    cfg = ImageConfig(**image_shape("resnet-narrow"))
    want = _resnet_parameters(cfg.widths, cfg.depths)
    assert sum(p.numel() for p in narrow.parameters()) == want


@pytest.mark.parametrize("name", ["resnet-tiny", "vit-tiny"])
def test_eval_mode_is_deterministic_and_batch_independent(name):
    model = build(name, dropout=0.1) if name.startswith("vit") else build(name)
    model.train()
    model(images(B=4))  # move the running statistics away from their initial values
    model.eval()
    x = images(B=4)
    with torch.no_grad():
        a, b = model(x)["pooled"], model(x)["pooled"]
        alone = model(x[:1])["pooled"]
    assert torch.equal(a, b)
    assert torch.allclose(a[:1], alone, atol=1e-5)


def test_group_norm_output_does_not_depend_on_the_batch_but_batch_norm_does():
    x = images(B=4)
    group = build("resnet-tiny", norm="group").train()
    assert torch.allclose(group(x)["pooled"][:1], group(x[:1])["pooled"], atol=1e-5)
    batch = build("resnet-tiny").train()
    other = x.clone()
    other[1:] = images(B=3, seed=5)  # the same first image among other images
    assert not torch.allclose(batch(x)["pooled"][:1], batch(other)["pooled"][:1], atol=1e-3)
    assert torch.allclose(group(x)["pooled"][:1], group(other)["pooled"][:1], atol=1e-5)


def test_vit_pooling_cls_and_mean():
    x = images(B=2)
    cls, mean = build("vit-tiny", pool="cls").eval(), build("vit-tiny", pool="mean").eval()
    with torch.no_grad():
        oc, om = cls(x), mean(x)
    assert oc["hidden"].shape[1] == 65 and om["hidden"].shape[1] == 64
    assert torch.equal(oc["pooled"], oc["hidden"][:, 0])
    assert torch.allclose(om["pooled"], om["hidden"].mean(1), atol=1e-6)
    n_cls = sum(p.numel() for p in cls.parameters())
    assert n_cls - sum(p.numel() for p in mean.parameters()) == cls.dim  # the [CLS] token


def test_vit_takes_smaller_grids_by_interpolating_its_positions():
    model = build("vit-tiny").eval()
    assert model.position_table(8, 8) is model.positions  # the full grid: the table itself
    with torch.no_grad():
        for side in (16, 12, 4):
            out = model(images(B=2, side=side))
            assert out["hidden"].shape == (2, (side // 4) ** 2 + 1, model.dim)
            assert torch.isfinite(out["pooled"]).all()
        rect = model(torch.rand(2, 3, 8, 16))
    assert rect["hidden"].shape == (2, 2 * 4 + 1, model.dim)
    # a constant table interpolates to the same constant, a linear ramp stays a ramp in its
    # interior (bicubic reproduces linear functions away from the borders)
    with torch.no_grad():
        ramp = torch.arange(8.0)[None, :, None].expand(8, 8, model.dim)  # (rows, cols, D)
        model.positions.copy_(ramp.reshape(1, 64, model.dim))
        small = model.position_table(4, 4).reshape(4, 4, model.dim)
    centres = (torch.arange(4.0) + 0.5) * 2 - 0.5  # the source coordinates of the new cells
    assert torch.allclose(small[1:3, 1:3, 0], centres[1:3].expand(2, 2), atol=1e-5)
    for bad in (30, 36):  # not a multiple of the patch; larger than image_size
        with pytest.raises(ValueError, match="multiples of the patch"):
            model(torch.rand(1, 3, bad, bad))


@pytest.mark.parametrize("side", [8, 12, 40])
def test_resnet_takes_any_side(side):
    model = build("resnet-narrow").eval()
    with torch.no_grad():
        out = model(images(B=2, side=side))
    last = side
    for _ in range(3):
        last = (last - 1) // 2 + 1  # 3x3 stride-2, padding 1
    assert out["hidden"].shape == (2, last * last, 128)


@pytest.mark.parametrize("name", ["resnet-tiny", "vit-tiny"])
def test_inputs_are_normalised_by_the_configured_mean_and_std(name):
    mean, std = (0.2, 0.5, 0.7), (0.1, 0.3, 0.2)
    model = build(name, mean=mean, std=std).eval()
    plain = build(name, mean=(0.0,) * 3, std=(1.0,) * 3).eval()
    assert not any("normalize" in k for k in model.state_dict())  # from the config, not saved
    plain.load_state_dict(model.state_dict())
    x = images(B=2)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x)["pooled"], plain((x - m) / s)["pooled"], atol=1e-5)
        assert not torch.allclose(model(x)["pooled"], plain(x)["pooled"], atol=1e-3)


def test_one_channel_images():
    model = build("resnet-tiny", channels=1, mean=(0.5,), std=(0.25,))
    assert model(torch.rand(2, 1, 16, 16))["pooled"].shape == (2, 16)
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\)"):
        model(torch.rand(2, 3, 16, 16))


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"arch": "convnext"}, "unknown model.arch"),
        ({"mean": (0.5, 0.5)}, "one value per channel"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
        ({"widths": (8, 16), "depths": (1,)}, "one value per stage"),
        ({"widths": (8, 0), "depths": (1, 1)}, "must be positive"),
        ({"norm": "layer"}, "unknown model.norm"),
        ({"norm": "group", "groups": 3}, "divide every width"),
        ({"arch": "vit", "image_size": 30}, "multiple of model.patch"),
        ({"arch": "vit", "dim": 100, "n_heads": 3}, "multiple of n_heads"),
        ({"arch": "vit", "pool": "max"}, "unknown model.pool"),
        ({"arch": "vit", "dropout": 1.0}, "dropout must be in"),
    ],
)
def test_config_errors(kw, says):
    with pytest.raises(ConfigError, match=says):
        ImageConfig(**kw).validate()


def test_shapes():
    with pytest.raises(ConfigError, match="unknown image model shape"):
        image_shape("resnet50")
    shape = image_shape("resnet18")
    shape["widths"] = (1,)
    assert image_shape("resnet18")["widths"] == (64, 128, 256, 512)  # a copy each call
    for name in SHAPES:
        ImageConfig(**image_shape(name)).validate()
    vit = ImageConfig(**image_shape("vit-small-cpu"))
    assert (vit.patch, vit.dim, vit.n_layers, vit.n_heads) == (4, 192, 6, 3)
