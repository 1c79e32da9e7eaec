"""One network for all classes ("multiclass") or one binary network per class ("uniclass"), as one trial.

Paper 003 compares a single multiclass segmentation network against ``n`` uniclass networks, each trained
to segment one organ against everything else, whose outputs are then read together (its Table 4:
multiclass 0.85 mean IoU against 0.73-0.79 uniclass). ``model.heads`` makes that a configuration
dimension. A uniclass configuration trains its ``C`` binary networks inside one fold trial, on the same
fold, the same batches and the same optimiser settings, and combines their outputs into the logits the
multiclass network would give, so the trial's metrics, case records, leaderboard rows and the report
treat both alike. Why one trial rather than ``C`` sibling trials: the configuration then has one
prediction per validation image, scored by the same code, and one row per fold to compare.

- Training: the criterion is the sum over classes of each binary network's own loss
  (:class:`UniclassLoss`). The networks share no parameter, so each receives exactly its own loss's
  gradient: the same updates as training it alone on these batches (Adam and SGD alike). The
  reported train and validation losses are that sum.
- Each binary network has one output channel: the logit of its class against the rest. Under
  sigmoid (multi-label data) the combined logits are those channels side by side, each class
  predicted by its own network exactly. Under softmax (one label per pixel, background channel 0)
  network ``c``'s two-class problem (rest, class ``c``) is the softmax of ``(0, z_c)``, and the
  combined logits are ``(0, z_1, ..., z_C)``: their softmax keeps each network's odds of its class
  against background, ``q_c / q_0 = exp(z_c) = p_c / (1 - p_c)``, and its argmax is background where
  every network says ``p_c < 1/2``, else the class whose network is most confident.
- One best epoch for all ``C`` networks, chosen by the combined prediction's ``select_metric``; the
  ROI-ratio subset of training slices (paper 002) is the configuration's, shared by the networks.
- Cost: ``C`` networks' compute and memory per step.

Reference, paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from trainables.contract import TrialConfig

BuildNetwork = Callable[[int], nn.Module]  # output channels -> a network of the trial's architecture
BuildLoss = Callable[["TrialConfig"], nn.Module]  # a trial's settings (classes, knobs) -> its loss


class UniclassNetwork(nn.Module):
    """One binary network per class, read together: (N, in, H, W) -> (N, channels, H, W) combined logits.

    Args:
        networks: one network per foreground class, each with one output channel.
        activation: ``sigmoid``: the logits side by side; ``softmax``: a background logit 0 first.
    """

    def __init__(self, networks: Sequence[nn.Module], activation: str):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.cat([network(x) for network in self.networks], dim=1)
        if self.activation == "softmax":
            logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
        return logits


class UniclassLoss(nn.Module):
    """Returns the sum over classes of each binary network's loss on its own class.

    Args:
        losses: one loss per foreground class, built for that class alone (:func:`binary_settings`).
        activation: ``sigmoid``: loss ``c`` scores channel ``c`` against mask ``c``; ``softmax``: it scores
            the two channels (background logit 0, class ``c``) against (not ``c``, ``c``).
    """

    def __init__(self, losses: Sequence[nn.Module], activation: str):
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.activation = activation

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total = logits.new_zeros(())
        for c, loss in enumerate(self.losses):
            if self.activation == "softmax":
                organ = target[:, c + 1 : c + 2]
                total = total + loss(
                    torch.cat([logits[:, :1], logits[:, c + 1 : c + 2]], dim=1), torch.cat([1 - organ, organ], dim=1)
                )
            else:
                total = total + loss(logits[:, c : c + 1], target[:, c : c + 1])
        return total


def binary_settings(cfg: TrialConfig) -> list[TrialConfig]:
    """Returns one trial setting per foreground class, for its binary network's loss: classes ``(c,)``
    under sigmoid, ``("background", c)`` under softmax, and only the loss knobs of that problem (a
    per-class knob keeps its value for ``c``)."""
    from trainables.losses import configured_knob_space

    settings = []
    for name in cfg.foreground_classes:
        classes = ("background", name) if cfg.activation == "softmax" else (name,)
        space = configured_knob_space(cfg.loss, classes)
        params = {k: v for k, v in cfg.loss_params.items() if k in space}
        settings.append(cfg.model_copy(update={"classes": classes, "loss_params": params, "heads": "multiclass"}))
    return settings


class Multiclass:
    """One network, one output channel per class (the default)."""

    def network(self, cfg: TrialConfig, build: BuildNetwork) -> nn.Module:
        return build(len(cfg.classes))

    def loss(self, cfg: TrialConfig, build: BuildLoss) -> nn.Module:
        return build(cfg)


class Uniclass:
    """One binary network per foreground class (paper 003's uniclass networks), combined."""

    def network(self, cfg: TrialConfig, build: BuildNetwork) -> nn.Module:
        return UniclassNetwork([build(1) for _ in cfg.foreground_classes], cfg.activation)

    def loss(self, cfg: TrialConfig, build: BuildLoss) -> nn.Module:
        return UniclassLoss([build(binary) for binary in binary_settings(cfg)], cfg.activation)


#: ``model.heads`` value -> how the trial's network and loss are made
HEADS: dict[str, Multiclass | Uniclass] = {"multiclass": Multiclass(), "uniclass": Uniclass()}
