"""Segmentation networks from segmentation-models-pytorch, found by lowercase architecture name.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

#: lowercase name -> smp architecture class. Adding one is one line.
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "unet": smp.Unet,
    "unetplusplus": smp.UnetPlusPlus,
    "fpn": smp.FPN,
    "linknet": smp.Linknet,
    "pspnet": smp.PSPNet,
    "deeplabv3": smp.DeepLabV3,
    "deeplabv3plus": smp.DeepLabV3Plus,
    "manet": smp.MAnet,
    "pan": smp.PAN,
    "segformer": smp.Segformer,
}


def known_encoders() -> list[str]:
    """Returns the encoder names smp can build (e.g. resnet34, mit_b2, efficientnet-b0)."""
    return sorted(smp.encoders.get_encoder_names())


def build_model(
    arch: str,
    encoder: str,
    *,
    in_channels: int = 3,
    classes: int = 3,
    encoder_weights: str | None = None,
) -> nn.Module:
    """Returns an smp network emitting ``classes`` logit channels (no activation).

    Args:
        arch: lowercase architecture name, a key of :data:`ARCHITECTURES` (``unet``, ``fpn``, ...).
        encoder: smp encoder name, e.g. ``resnet34`` or ``mit_b2`` (paper 000's SegFormer MiT-B2).
        in_channels: input channels; 2.5D input with one neighbour each side gives 3.
        classes: output channels, one per organ (multi-label, sigmoid applied by losses/metrics).
        encoder_weights: ``None`` (default: random init, nothing downloaded) or e.g. ``"imagenet"``,
            which smp downloads on first use and therefore needs internet access.
    """
    key = arch.lower()
    if key not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    if encoder not in smp.encoders.get_encoder_names():
        raise KeyError(f"unknown encoder {encoder!r}; see trainables.models.known_encoders()")
    return ARCHITECTURES[key](
        encoder_name=encoder,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=classes,
        activation=None,
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

    cls = ARCHITECTURES[arch.lower()]
    if not getattr(cls, "requires_divisible_input_shape", True):
        return 1
    try:
        with torch.device("meta"):
            model = build_model(arch, encoder, in_channels=in_channels, classes=classes)
    except RuntimeError:
        model = build_model(arch, encoder, in_channels=in_channels, classes=classes)
    return int(getattr(model.encoder, "output_stride", 1))
