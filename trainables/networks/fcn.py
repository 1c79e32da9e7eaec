"""FCN-8s: a classification network made fully convolutional, its coarse scores refined by two skips.

Reference: Long J., Shelhamer E., Darrell T. "Fully convolutional networks for semantic segmentation."
CVPR 2015, pp. 3431-3440. doi:10.1109/CVPR.2015.7298965. Paper 003 (Furtado P. "Investigation of loss
functions for improving deep segmentation of abdominal organs from MRI.") trains it with a VGG-16
encoder: "FCN uses simple interpolation in the decoder stages" with "forward connections feeding
feature maps from encoder to decoder stages", i.e. FCN-8s.

As published: the encoder's last map (stride 32) goes through ``fc6`` (7x7 convolution, 4096
channels, ReLU, dropout 0.5) and ``fc7`` (1x1, 4096, ReLU, dropout 0.5), the classifier's fully
connected layers as convolutions, then a 1x1 convolution scores each class. The scores are
upsampled x2 by a transposed convolution initialised to bilinear interpolation and added to 1x1
class scores of the stride-16 map; the sum is upsampled x2 likewise and added to scores of the
stride-8 map; the result is upsampled x8 bilinearly (the paper's fixed deconvolution) to the input.
The skip score layers start at zero, so training starts from the stride-32 prediction.

The encoder is any segmentation-models-pytorch encoder; its maps at strides 8, 16 and 32 are the
skips. For VGG-16 these are the last convolution blocks at each stride (conv4_3, conv5_3, and pool5),
where the paper took pool3, pool4 and pool5: one convolution block deeper at strides 8 and 16.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: channels of fc6 and fc7, VGG-16's fully connected layers as Long et al. convert them
FC_CHANNELS = 4096


def bilinear_kernel(channels: int, size: int) -> Tensor:
    """Returns a (channels, channels, size, size) transposed-convolution weight that upsamples each
    channel bilinearly by ``size // 2``: ``(1 - |i - c| / f)(1 - |j - c| / f)`` with ``f = ceil(size / 2)``,
    ``c = f - 1`` for odd ``size``, else ``f - 0.5`` (Long et al.'s initialisation)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


class FCN8s(nn.Module):
    """FCN-8s over an smp encoder: (N, in_channels, H, W) -> (N, classes, H, W) logits.

    Args:
        encoder: smp encoder name (paper 003: ``vgg16``).
        in_channels: input channels.
        classes: output channels.
        encoder_weights: smp weight name (``imagenet``: downloaded on first use) or ``None``.
        fc_channels: channels of fc6 and fc7 (Long et al.: 4096, :data:`FC_CHANNELS`).
    """

    def __init__(
        self,
        encoder: str = "vgg16",
        in_channels: int = 3,
        classes: int = 1,
        encoder_weights: str | None = None,
        fc_channels: int = FC_CHANNELS,
    ):
        super().__init__()
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=encoder_weights)
        stride8, stride16, stride32 = self.encoder.out_channels[3:6]
        self.fc = nn.Sequential(
            nn.Conv2d(stride32, fc_channels, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(fc_channels, fc_channels, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
        )
        self.score32 = nn.Conv2d(fc_channels, classes, 1)
        self.score16 = nn.Conv2d(stride16, classes, 1)
        self.score8 = nn.Conv2d(stride8, classes, 1)
        self.up32 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)
        self.up16 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            for layer in (self.score16, self.score8):
                layer.weight.zero_()
                layer.bias.zero_()
            for layer in (self.up32, self.up16):
                layer.weight.copy_(bilinear_kernel(classes, 4))

    def forward(self, x: Tensor) -> Tensor:
        features = self.encoder(x)
        scores = self.score32(self.fc(features[5]))
        scores = _fit(self.up32(scores), features[4]) + self.score16(features[4])
        scores = _fit(self.up16(scores), features[3]) + self.score8(features[3])
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _fit(scores: Tensor, like: Tensor) -> Tensor:
    """Returns ``scores`` at the spatial size of ``like`` (a side that was odd before a stride-2 step)."""
    if scores.shape[-2:] == like.shape[-2:]:
        return scores
    return F.interpolate(scores, size=like.shape[-2:], mode="bilinear", align_corners=False)
