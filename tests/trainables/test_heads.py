"""One binary network per class ("uniclass", paper 003) as one trial: the combined logits, the summed
loss, each network's own gradient, and a uniclass trial trained, saved and loaded back."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.contract import TrialConfig
from trainables.data import generate_uwmgi, prepare_cache
from trainables.heads import UniclassLoss, UniclassNetwork, binary_settings
from trainables.inference import build_network, load_network, predict_slices, validation_slices
from trainables.losses import build_loss
from trainables.train import BEST_WEIGHTS_FILE, build_criterion, run_fold


class Constant(nn.Module):
    """A network whose one output channel is ``value`` everywhere (and a weight to train)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, x):
        return self.value * torch.ones_like(x[:, :1])


def test_sigmoid_combination_is_each_networks_own_logit():
    combined = UniclassNetwork([Constant(2.0), Constant(-1.0)], "sigmoid")(torch.zeros(1, 3, 2, 2))
    assert combined.shape == (1, 2, 2, 2)
    assert combined[0, :, 0, 0].tolist() == [2.0, -1.0]


def test_softmax_combination_keeps_each_networks_odds_against_background_by_hand():
    z = [0.5, -1.0, 2.0]
    combined = UniclassNetwork([Constant(v) for v in z], "softmax")(torch.zeros(1, 1, 1, 1))
    q = combined.softmax(dim=1)[0, :, 0, 0]
    # q_c / q_0 = exp(z_c) = p_c / (1 - p_c) with p_c = sigmoid(z_c), network c's own probability
    for c, value in enumerate(z, start=1):
        p = 1 / (1 + math.exp(-value))
        assert (q[c] / q[0]).item() == pytest.approx(p / (1 - p))
    assert combined.argmax(dim=1).item() == 3  # the most confident network's class
    # every network below 1/2: background
    assert UniclassNetwork([Constant(-0.1), Constant(-2.0)], "softmax")(torch.zeros(1, 1, 1, 1)).argmax(1).item() == 0


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_the_loss_is_the_sum_of_each_classes_binary_cross_entropy_by_hand(activation):
    g = torch.Generator().manual_seed(0)
    organs = (torch.rand(2, 2, 4, 4, generator=g) > 0.6).float()
    organs[:, 1] *= 1 - organs[:, 0]  # one label per pixel, as a softmax target needs
    logits = torch.randn(2, 2, 4, 4, generator=g)
    if activation == "softmax":
        background = 1 - organs.amax(dim=1, keepdim=True)
        target = torch.cat([background, organs], dim=1)
        combined = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
    else:
        target, combined = organs, logits
    binary_ce = build_loss("ce", activation=activation)  # softmax over (0, z) is sigmoid(z): CE is BCE
    loss = UniclassLoss([binary_ce, binary_ce], activation)(combined, target)
    expected = sum(nn.functional.binary_cross_entropy_with_logits(logits[:, c], organs[:, c]) for c in range(2))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_each_network_receives_exactly_its_own_losses_gradient():
    networks = [Constant(0.3), Constant(-0.7)]
    target = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1).expand(2, 2, 3, 3).contiguous()
    bce = build_loss("ce")
    UniclassLoss([bce, bce], "sigmoid")(
        UniclassNetwork(networks, "sigmoid")(torch.zeros(2, 1, 3, 3)), target
    ).backward()
    for c, network in enumerate(networks):
        alone = Constant(network.value.item())
        bce(alone(torch.zeros(2, 1, 3, 3)), target[:, c : c + 1]).backward()
        assert network.value.grad.item() == pytest.approx(alone.value.grad.item())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("gi")
    generate_uwmgi(root / "data", cases=3, slices_per_scan=4, image_size=32, seed=1)
    return prepare_cache(root / "data", root / "cache", image_size=32, n_folds=3)


def uniclass(cache, **over) -> TrialConfig:
    settings = dict(
        cache_dir=str(cache),
        fold=0,
        arch="plain_unet",
        encoder="width16",
        heads="uniclass",
        loss="ce + pm_dice",
        loss_params={"pm_dice.gamma.large_bowel": 1.0, "pm_dice.gamma.small_bowel": 2.0, "pm_dice.gamma.stomach": 3.0},
        image_size=32,
        epochs=1,
        batch_size=4,
        max_train_batches=2,
        augmentation="none",
        boundary_metrics=False,
    )
    return TrialConfig.from_dict({**settings, **over})


def test_binary_settings_keep_each_classes_own_knobs(cache):
    parts = binary_settings(uniclass(cache))
    assert [p.classes for p in parts] == [("large_bowel",), ("small_bowel",), ("stomach",)]
    assert [p.loss_params for p in parts] == [
        {"pm_dice.gamma.large_bowel": 1.0},
        {"pm_dice.gamma.small_bowel": 2.0},
        {"pm_dice.gamma.stomach": 3.0},
    ]
    assert {p.heads for p in parts} == {"multiclass"}
    assert len(build_criterion(uniclass(cache), validation_slices(uniclass(cache)).index).losses) == 3


def test_a_uniclass_trial_trains_one_network_per_class_and_loads_for_the_report(cache, tmp_path):
    cfg = uniclass(cache)
    results = []

    def report(metrics, checkpoint_dir):
        results.append(metrics)
        (tmp_path / BEST_WEIGHTS_FILE).write_bytes((checkpoint_dir / BEST_WEIGHTS_FILE).read_bytes())

    run_fold(cfg, report)
    assert math.isfinite(results[-1]["train_loss"]) and "best.dice.small_bowel" in results[-1]
    network = load_network(cfg, tmp_path / BEST_WEIGHTS_FILE)
    assert isinstance(network, UniclassNetwork) and len(network.networks) == 3
    assert build_network(cfg).state_dict().keys() == network.state_dict().keys()
    predictions = predict_slices(cfg, network, validation_slices(cfg))
    assert predictions.pred.shape[1:] == (3, 32, 32) and predictions.classes == cfg.classes


def test_a_uniclass_trial_on_one_label_per_pixel_trains_binary_softmax_networks(tmp_path):
    from acdc_data import ACDC_CLASSES, prepare_acdc_cache  # ACDC-layout NIfTI volumes: RV, MYO, LV

    acdc = list(ACDC_CLASSES)
    cache = prepare_acdc_cache(tmp_path / "acdc", tmp_path / "cache", size=16, slices=4, patients=3, n_folds=3)
    cfg = uniclass(
        cache,
        arch="unet",
        encoder="resnet18",
        image_size=16,
        activation="softmax",
        classes=["background", *acdc],
        loss="dice",
        loss_params={},
        loss_include_background=False,  # diceBK: each binary network scores its organ only
    )
    parts = binary_settings(cfg)
    assert [p.classes for p in parts] == [("background", c) for c in acdc]
    results = []
    run_fold(cfg, lambda metrics, _: results.append(metrics))
    assert math.isfinite(results[-1]["train_loss"]) and "best.dice.LV" in results[-1]
    assert build_network(cfg)(torch.zeros(2, 3, 16, 16)).shape == (2, 4, 16, 16)
