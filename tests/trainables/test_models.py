"""The network registry (trainables.models) and the papers' own networks (trainables.networks): each builds
through the one interface, gives logits of the input's size, passes gradients to every layer and learns a
small batch within a few steps, on the CPU at small size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import ARCHITECTURES, build_model, encoders_of, known_encoders
from trainables.networks import FCN8s, LevitUnet, PlainUnet
from trainables.networks.fcn import bilinear_kernel

#: (architecture, encoder, side): each paper's networks at a size it trained at
PAPER_NETWORKS = [
    ("levit_unet", "levit_192", 224),  # paper 001 (LeViT-UNet)
    ("fcn", "vgg16", 256),  # paper 003
    ("unet", "vgg16", 256),  # paper 003
    ("deeplabv3", "resnet18", 256),  # paper 003
    ("plain_unet", "width64", 256),  # paper 004's plain U-Net
]

#: the same networks small enough to train on the CPU in seconds: (name, build)
SMALL_NETWORKS = {
    "levit_unet/levit_128s": lambda: build_model("levit_unet", "levit_128s", classes=2, image_size=32),
    # FCN-8s with fc6/fc7 of 64 channels instead of 4096 (the same layers, 1/4000 of the weights)
    "fcn/vgg11": lambda: FCN8s("vgg11", in_channels=3, classes=2, fc_channels=64),
    "unet/vgg11": lambda: build_model("unet", "vgg11", classes=2),
    "deeplabv3/resnet18": lambda: build_model("deeplabv3", "resnet18", classes=2),
    "plain_unet/width16": lambda: build_model("plain_unet", "width16", classes=2),
}


def batch(side: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (2, 3, side, side) images and (2, 2, side, side) targets the images determine (a
    bright-square mask and its complement), so a network can learn them."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, side, side, generator=g) * 0.1
    images[:, :, side // 4 : side // 2, side // 4 : side // 2] += 1.0
    square = (images[:, :1] > 0.5).float()
    return images, torch.cat([square, 1 - square], dim=1)


@pytest.mark.parametrize(("arch", "encoder", "side"), PAPER_NETWORKS)
def test_paper_networks_build_through_the_registry_with_logits_of_the_input_size(arch, encoder, side):
    with torch.device("meta"):  # shapes only: no memory, no compute, nothing downloaded
        model = build_model(arch, encoder, in_channels=3, classes=4, image_size=side)
        assert model(torch.empty(2, 3, side, side)).shape == (2, 4, side, side)


@pytest.mark.parametrize("name", list(SMALL_NETWORKS))
def test_paper_networks_pass_gradients_to_every_layer_and_learn_a_batch(name):
    torch.manual_seed(0)
    model = SMALL_NETWORKS[name]()
    images, target = batch(32)
    images.requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(5):
        optimizer.zero_grad()
        logits = model(images)
        assert logits.shape == (2, 2, 32, 32)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, f"no gradient reaches {missing[:5]}"
            assert all(torch.isfinite(p.grad).all() for p in model.parameters())
            assert images.grad.abs().sum() > 0  # the loss reaches back to the input, through the encoder
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_every_architecture_is_one_entry_naming_its_encoders_and_its_paper():
    for name, architecture in ARCHITECTURES.items():
        assert name == name.lower() and architecture.encoders() and architecture.reference
        assert set(encoders_of(name)) <= set(known_encoders())
    assert encoders_of("levit_unet") == ["levit_128s", "levit_192", "levit_384"]
    assert "vgg16" in encoders_of("fcn") and "vgg16" in encoders_of("unet") and "resnet18" in encoders_of("deeplabv3")
    assert encoders_of("plain_unet") == ["width16", "width32", "width64"]


def test_an_encoder_the_architecture_does_not_take_is_refused_naming_both():
    with pytest.raises(KeyError, match="'levit_192' for architecture 'unet'"):
        build_model("unet", "levit_192")
    with pytest.raises(KeyError, match=r"'resnet34' for architecture 'levit_unet'; choose from \['levit_128s'"):
        build_model("levit_unet", "resnet34")
    with pytest.raises(KeyError, match="unknown architecture 'transunet'"):
        build_model("transunet", "resnet34")


def test_levit_unet_is_built_for_one_input_size_a_multiple_of_16():
    with pytest.raises(ValueError, match="divisible by 16, got 72"):
        LevitUnet("levit_128s", image_size=72)
    # ImageNet weights exist for 224 only: refused before anything is downloaded
    with pytest.raises(ValueError, match="224 x 224 input, not 64"):
        LevitUnet("levit_128s", encoder_weights="imagenet", image_size=64)
    with pytest.raises(ValueError, match="null or 'imagenet'"):
        LevitUnet("levit_128s", encoder_weights="imagnet")


def test_levit_unet_concatenates_the_three_attention_stages_at_stride_16():
    model = LevitUnet("levit_128s", in_channels=1, classes=3, image_size=32).eval()
    assert model.decoder[0][0].in_channels == 128 + 256 + 384 + 64  # stages + the stem's stride-8 skip
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_plain_unet_has_ronnebergers_widths_and_keeps_any_size():
    model = PlainUnet(in_channels=1, classes=2, width=64)
    assert [block[0].out_channels for block in model.down] == [64, 128, 256, 512, 1024]
    small = PlainUnet(in_channels=1, classes=2, width=4).eval()
    assert small(torch.zeros(1, 1, 40, 24)).shape == (1, 2, 40, 24)  # 40 and 24 are not multiples of 16
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("plain_unet", "width16", encoder_weights="imagenet")


def test_fcn_upsampling_starts_bilinear_by_hand():
    # size 4, factor 2: the ramp 1 - |i - 1.5| / 2 = 0.25, 0.75, 0.75, 0.25 on each axis
    kernel = bilinear_kernel(2, 4)
    ramp = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(kernel[0, 0], ramp[:, None] * ramp[None, :])
    assert torch.equal(kernel[0, 1], torch.zeros(4, 4))  # no mixing between classes
    up = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(kernel)
        doubled = up(torch.ones(1, 2, 4, 4))
    assert doubled.shape == (1, 2, 8, 8)
    assert torch.allclose(doubled[0, :, 1:-1, 1:-1], torch.ones(2, 6, 6))  # a constant stays constant inside
