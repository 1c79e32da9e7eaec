"""The papers' own networks, built beside segmentation-models-pytorch's (registered in :mod:`trainables.models`).

- :class:`LevitUnet`: LeViT encoder and U-Net decoder (Xu et al., 2021; paper 001's network);
- :class:`FCN8s`: fully convolutional network with skips at strides 8 and 16 (Long et al., 2015; paper 003's FCN);
- :class:`PlainUnet`: the U-Net of Ronneberger et al. (2015) (paper 004's plain baseline).

Each takes ``in_channels`` and ``classes`` and returns ``classes`` logit channels at the input's size.
"""

from trainables.networks.fcn import FCN8s
from trainables.networks.levit_unet import LEVIT_ENCODERS, LevitUnet
from trainables.networks.plain_unet import PLAIN_UNET_WIDTHS, PlainUnet

__all__ = ["LEVIT_ENCODERS", "PLAIN_UNET_WIDTHS", "FCN8s", "LevitUnet", "PlainUnet"]
