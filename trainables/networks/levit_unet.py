"""LeViT-UNet: a LeViT encoder (convolution stem, then attention stages) under a U-Net decoder.

Reference: Xu G., Wu X., Zhang X., He X. "LeViT-UNet: Make faster encoders with transformer for medical
image segmentation." 2021, arXiv:2107.08623 (PRCV 2023, LNCS 14432, pp. 42-53,
doi:10.1007/978-981-99-8543-2_4). Paper 001 (Oshah A. A., Rgibi A. E., Alarbish A., Amin H. H.
"Accurate segmentation of imbalanced medical images: a comparative study." 2025,
doi:10.26629/jtr.2025.57) trains it. The encoder is LeViT (Graham B. et al. "LeViT: a vision
transformer in ConvNet's clothing for faster inference." ICCV 2021, doi:10.1109/ICCV48922.2021.01204),
as timm builds it; Xu et al. compare LeViT-128s, LeViT-192 and LeViT-384 encoders.

As Xu et al. describe it:

- encoder: LeViT's stem of four 3x3 stride-2 convolutions (Hardswish between them) gives maps at
  strides 2, 4 and 8 (the skips) and 16; its three attention stages work at strides 16, 32 and 64;
- the three stages' maps are upsampled bilinearly to stride 16 and concatenated, so the decoder's
  first input holds local and global features of every scale;
- decoder: four blocks, each a bilinear x2 upsampling, concatenation with the stem's map of that
  stride (none at full size) and two (3x3 convolution, batch norm, ReLU) layers, with 256, 128, 64
  and 16 channels (TransUNet's cascaded upsampler, which Xu et al. follow); then a 3x3 convolution
  to the classes.

LeViT's attention biases are learnt per position, so the network is built for one input size
(``image_size``, a multiple of 16); ImageNet weights exist for 224 x 224 only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.networks.plain_unet import double_conv

#: encoder name -> timm's LeViT with convolutional (B, C, H, W) stages; the variants Xu et al. compare
LEVIT_ENCODERS: dict[str, str] = {
    "levit_128s": "levit_conv_128s",
    "levit_192": "levit_conv_192",
    "levit_384": "levit_conv_384",
}
#: channels of the four decoder blocks (strides 8, 4, 2, 1)
DECODER_CHANNELS = (256, 128, 64, 16)
#: the one input size timm's ImageNet LeViT weights fit
PRETRAINED_SIZE = 224


class LevitUnet(nn.Module):
    """LeViT-UNet: (N, in_channels, S, S) -> (N, classes, S, S) logits, ``S = image_size``.

    Args:
        encoder: ``levit_128s``, ``levit_192`` or ``levit_384`` (:data:`LEVIT_ENCODERS`).
        in_channels: input channels.
        classes: output channels.
        encoder_weights: ``None`` (random initialisation, nothing downloaded) or ``imagenet`` (timm
            downloads the ImageNet weights on first use; needs ``image_size`` 224).
        image_size: the input's side, a multiple of 16 (default 224).

    Raises:
        ValueError: an unknown encoder or weights name, or a size LeViT cannot take.
    """

    def __init__(
        self,
        encoder: str = "levit_192",
        in_channels: int = 3,
        classes: int = 1,
        encoder_weights: str | None = None,
        image_size: int | None = None,
    ):
        super().__init__()
        import timm

        size = PRETRAINED_SIZE if image_size is None else int(image_size)
        if encoder not in LEVIT_ENCODERS:
            raise ValueError(f"unknown LeViT encoder {encoder!r}; choose from {sorted(LEVIT_ENCODERS)}")
        if encoder_weights not in (None, "imagenet"):
            raise ValueError(f"LeViT encoder_weights must be null or 'imagenet', got {encoder_weights!r}")
        if size % 16:
            raise ValueError(f"LeViT-UNet needs an image size divisible by 16, got {size}")
        if encoder_weights is not None and size != PRETRAINED_SIZE:
            raise ValueError(f"LeViT's ImageNet weights fit {PRETRAINED_SIZE} x {PRETRAINED_SIZE} input, not {size}")
        levit = timm.create_model(
            LEVIT_ENCODERS[encoder],
            pretrained=encoder_weights is not None,
            img_size=size,
            in_chans=in_channels,
            num_classes=0,
        )
        self.stem, self.stages = levit.stem, levit.stages
        stem = [self.stem.conv1, self.stem.conv2, self.stem.conv3]
        skips = [conv.linear.out_channels for conv in reversed(stem)] + [0]
        channels = [sum(levit.embed_dim), *DECODER_CHANNELS]
        self.decoder = nn.ModuleList(
            double_conv(channels[i] + skips[i], channels[i + 1]) for i in range(len(DECODER_CHANNELS))
        )
        self.head = nn.Conv2d(DECODER_CHANNELS[-1], classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        stem = self.stem
        half = stem.act1(stem.conv1(x))
        quarter = stem.act2(stem.conv2(half))
        eighth = stem.act3(stem.conv3(quarter))
        features = [stem.conv4(eighth)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        sixteenth = features[1].shape[-2:]
        x = torch.cat(
            [
                features[1],
                *(F.interpolate(f, size=sixteenth, mode="bilinear", align_corners=False) for f in features[2:]),
            ],
            dim=1,
        )
        for block, skip in zip(self.decoder, [eighth, quarter, half, None], strict=True):
            target = size if skip is None else skip.shape[-2:]
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
            x = block(x if skip is None else torch.cat([x, skip], dim=1))
        return self.head(x)
