"""Segmentation networks found by lowercase architecture name: segmentation-models-pytorch's and the papers'.

Each entry of :data:`ARCHITECTURES` says how to build the network and which encoders it takes; adding
an architecture is one entry. Every network takes ``in_channels`` and emits ``classes`` logit channels
(no activation) at the input's size; ``encoder_weights`` is off by default (nothing is downloaded).

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- the papers' own networks: :mod:`trainables.networks` (LeViT-UNet, FCN-8s, the plain U-Net).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import segmentation_models_pytorch as smp
from torch import nn

from trainables.networks import LEVIT_ENCODERS, PLAIN_UNET_WIDTHS, FCN8s, LevitUnet, PlainUnet


def smp_encoders() -> list[str]:
    """Returns the encoder names smp can build (e.g. resnet34, mit_b2, efficientnet-b0)."""
    return sorted(smp.encoders.get_encoder_names())


@dataclass(frozen=True)
class Architecture:
    """A registered network family.

    Attributes:
        build: ``build(encoder, in_channels=, classes=, encoder_weights=, image_size=)`` -> the network.
        encoders: returns the encoder names it takes.
        reference: the paper that describes it (authors, title, year, venue), for the README's table.
    """

    build: Callable[..., nn.Module]
    encoders: Callable[[], list[str]]
    reference: str


def _smp_build(cls: type[nn.Module], encoder: str, *, in_channels, classes, encoder_weights, image_size):
    del image_size  # smp networks take any size divisible by their output stride
    return cls(
        encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels, classes=classes, activation=None
    )


def _smp(cls: type[nn.Module], reference: str) -> Architecture:
    return Architecture(partial(_smp_build, cls), smp_encoders, reference)


def _fcn(encoder: str, *, in_channels, classes, encoder_weights, image_size) -> nn.Module:
    del image_size
    return FCN8s(encoder, in_channels=in_channels, classes=classes, encoder_weights=encoder_weights)


def _levit_unet(encoder: str, *, in_channels, classes, encoder_weights, image_size) -> nn.Module:
    return LevitUnet(
        encoder, in_channels=in_channels, classes=classes, encoder_weights=encoder_weights, image_size=image_size
    )


def _plain_unet(encoder: str, *, in_channels, classes, encoder_weights, image_size) -> nn.Module:
    del image_size
    if encoder_weights is not None:
        raise ValueError(
            f"the plain U-Net has no pretrained weights; set model.encoder_weights null, not {encoder_weights!r}"
        )
    return PlainUnet(in_channels=in_channels, classes=classes, width=PLAIN_UNET_WIDTHS[encoder])


#: lowercase name -> how to build it. Adding an architecture is one entry.
ARCHITECTURES: dict[str, Architecture] = {
    "unet": _smp(smp.Unet, "Ronneberger et al., U-Net, MICCAI 2015; smp's decoder over any smp encoder"),
    "unetplusplus": _smp(smp.UnetPlusPlus, "Zhou et al., UNet++, DLMIA 2018"),
    "fpn": _smp(smp.FPN, "Kirillov et al., Panoptic FPN, CVPR 2019"),
    "linknet": _smp(smp.Linknet, "Chaurasia and Culurciello, LinkNet, VCIP 2017"),
    "pspnet": _smp(smp.PSPNet, "Zhao et al., PSPNet, CVPR 2017"),
    "deeplabv3": _smp(smp.DeepLabV3, "Chen et al., Rethinking atrous convolution, arXiv:1706.05587, 2017"),
    "deeplabv3plus": _smp(smp.DeepLabV3Plus, "Chen et al., DeepLabV3+, ECCV 2018"),
    "manet": _smp(smp.MAnet, "Fan et al., MA-Net, IEEE Access 2020"),
    "pan": _smp(smp.PAN, "Li et al., Pyramid attention network, BMVC 2018"),
    "segformer": _smp(smp.Segformer, "Xie et al., SegFormer, NeurIPS 2021"),
    "fcn": Architecture(_fcn, smp_encoders, "Long, Shelhamer, Darrell, FCN (FCN-8s), CVPR 2015"),
    "levit_unet": Architecture(
        _levit_unet, lambda: sorted(LEVIT_ENCODERS), "Xu, Wu, Zhang, He, LeViT-UNet, arXiv:2107.08623, 2021"
    ),
    "plain_unet": Architecture(
        _plain_unet, lambda: sorted(PLAIN_UNET_WIDTHS), "Ronneberger, Fischer, Brox, U-Net, MICCAI 2015"
    ),
}


def known_encoders() -> list[str]:
    """Returns every encoder name some architecture takes: smp's (resnet34, mit_b2, ...) and the papers' own
    (levit_192, width64, ...)."""
    return sorted({name for architecture in ARCHITECTURES.values() for name in architecture.encoders()})


def encoders_of(arch: str) -> list[str]:
    """Returns the encoder names architecture ``arch`` takes (KeyError listing the architectures when unknown)."""
    key = arch.lower()
    if key not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[key].encoders()


def build_model(
    arch: str,
    encoder: str,
    *,
    in_channels: int = 3,
    classes: int = 3,
    encoder_weights: str | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """Returns a network emitting ``classes`` logit channels (no activation).

    Args:
        arch: lowercase architecture name, a key of :data:`ARCHITECTURES` (``unet``, ``fcn``, ``levit_unet``, ...).
        encoder: an encoder the architecture takes (:func:`encoders_of`): an smp encoder such as
            ``resnet34`` or ``mit_b2`` (paper 000's SegFormer MiT-B2), or the papers' own (``levit_192``).
        in_channels: input channels; 2.5D input with one neighbour each side gives 3.
        classes: output channels, one per organ (multi-label, sigmoid applied by losses/metrics).
        encoder_weights: ``None`` (default: random init, nothing downloaded) or e.g. ``"imagenet"``,
            which smp (or timm) downloads on first use and therefore needs internet access.
        image_size: the input's side, for networks built for one size (LeViT-UNet; default 224).
    """
    key = arch.lower()
    if key not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    architecture = ARCHITECTURES[key]
    if encoder not in architecture.encoders():
        own = architecture.encoders()
        hint = f"choose from {own}" if len(own) < 20 else "see trainables.models.encoders_of(arch)"
        raise KeyError(f"unknown encoder {encoder!r} for architecture {key!r}; {hint}")
    return architecture.build(
        encoder, in_channels=in_channels, classes=classes, encoder_weights=encoder_weights, image_size=image_size
    )


def encoder_weight_names(encoder: str) -> list[str] | None:
    """Returns the pretrained weight sets smp declares for ``encoder`` (e.g. ``['imagenet']``; read from its
    encoder table, nothing downloaded), or None when smp does not list them (timm's ``tu-`` encoders)."""
    entry = smp.encoders.encoders.get(encoder)
    if entry is None:
        return None
    return sorted(entry.get("pretrained_settings") or {})


def input_multiple(arch: str, encoder: str, *, in_channels: int = 3, classes: int = 3) -> int:
    """Returns the number an input's height and width must be a multiple of for this network: its encoder's
    output stride when smp requires a divisible input (``requires_divisible_input_shape``), else 1. Built on
    the meta device (no memory, no download), or on the CPU for encoders whose constructor reads tensors."""
    import torch

    try:
        with torch.device("meta"):
            model = build_model(arch, encoder, in_channels=in_channels, classes=classes)
    except RuntimeError:
        model = build_model(arch, encoder, in_channels=in_channels, classes=classes)
    if not getattr(model, "requires_divisible_input_shape", False):
        return 1
    return int(getattr(getattr(model, "encoder", None), "output_stride", 1))
