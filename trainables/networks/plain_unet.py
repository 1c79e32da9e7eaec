"""The plain U-Net of Ronneberger, Fischer and Brox: no pretrained encoder, four poolings.

Reference: Ronneberger O., Fischer P., Brox T. "U-Net: Convolutional networks for biomedical image
segmentation." MICCAI 2015, LNCS 9351, pp. 234-241. doi:10.1007/978-3-319-24574-4_28. Paper 004
(Hosseini S. M. "Pixel-wise modulated Dice loss for medical image segmentation." 2025,
arXiv:2506.15744) uses it as its "simple U-Net with 4 max pooling layers".

As published: a contracting path of four levels, each two 3x3 convolutions with ReLU then a 2x2 max
pooling, channels ``w, 2w, 4w, 8w`` and ``16w`` at the bottom (``w = 64``); an expanding path of 2x2
up-convolutions halving the channels, concatenation with the contracting path's map of the same
level, two 3x3 convolutions with ReLU; a 1x1 convolution to the classes. Two departures, both usual
since: the 3x3 convolutions are padded, so the output has the input's size (the paper's unpadded
convolutions shrink it and need overlap-tiling), and a batch normalisation follows each convolution
(Ioffe S., Szegedy C. "Batch normalization." ICML 2015), which the 2015 network predates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: encoder name -> first level's channels ``w`` (doubling per level); Ronneberger et al.: 64
PLAIN_UNET_WIDTHS: dict[str, int] = {"width64": 64, "width32": 32, "width16": 16}


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Returns two (3x3 convolution, batch norm, ReLU) layers: one level of either path."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PlainUnet(nn.Module):
    """Ronneberger et al.'s U-Net: (N, in_channels, H, W) -> (N, classes, H, W) logits.

    Args:
        in_channels: input channels.
        classes: output channels.
        width: channels of the first level (64 as published), doubled at each of the four poolings.
    """

    def __init__(self, in_channels: int = 3, classes: int = 1, width: int = 64):
        super().__init__()
        widths = [width * 2**level for level in range(5)]
        self.down = nn.ModuleList(double_conv(a, b) for a, b in zip([in_channels, *widths[:-1]], widths, strict=True))
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.merge = nn.ModuleList(double_conv(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(reversed(self.up), reversed(self.merge), strict=True):
            skip = skips.pop()
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # a side not divisible by 16: pooling floored it
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = merge(torch.cat([skip, x], dim=1))
        return self.head(x)
