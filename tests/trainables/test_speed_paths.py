"""The fast paths of a trial: reproducible loaders, the cheaper CPU augmentation, the
batched on-device augmentation (same parameter distributions as Albumentations), the training
step's channels-last / compile switches, and DataLoader sizing from the trial's CPUs."""

import math
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from albumentations.augmentations.geometric import functional as fgeometric  # noqa: E402

from trainables.data import generate_uwmgi, prepare_cache  # noqa: E402
from trainables.data.augment import (  # noqa: E402
    SEED000_GEOMETRY,
    build_augmentation,
    record_geometric_parameters,
    seed_transform,
    smooth_displacement,
)
from trainables.data.gpu_augment import (  # noqa: E402
    BatchGeometricAugment,
    GeometricParams,
    _grid_coordinates,
    apply_geometric,
)
from trainables.losses import build_loss  # noqa: E402
from trainables.train import TrainStep, TrialConfig, loader_workers, make_loaders, run_fold  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("gi")
    generate_uwmgi(root / "data", cases=3, slices_per_scan=8, image_size=32, seed=3)
    return prepare_cache(root / "data", root / "cache", image_size=32, n_folds=3)


def _cfg(cache, **over) -> TrialConfig:
    base = dict(
        cache_dir=str(cache),
        fold=0,
        arch="unet",
        encoder="resnet18",
        loss="dice",
        image_size=32,
        batch_size=4,
        epochs=1,
        augmentation="seed000",
        num_workers=0,
    )
    return TrialConfig.from_dict({**base, **over})


def _batches(cache, n=3, **over) -> list[tuple[torch.Tensor, torch.Tensor]]:
    train, _ = make_loaders(_cfg(cache, **over), CPU)
    out = []
    for images, masks in train:
        out.append((images, masks))
        if len(out) == n:
            break
    return out


# ---- reproducible loaders ------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches_and_another_seed_differs(cache, workers):
    first = _batches(cache, num_workers=workers, seed=7)
    again = _batches(cache, num_workers=workers, seed=7)
    other = _batches(cache, num_workers=workers, seed=8)
    for (i1, m1), (i2, m2) in zip(first, again, strict=True):
        torch.testing.assert_close(i1, i2, rtol=0, atol=0)
        torch.testing.assert_close(m1, m2, rtol=0, atol=0)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_one_random_stream_keeps_flips_independent():
    # Compose(seed=k) seeds every transform with k: both flips would always fire together
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], save_applied_params=True)
    seed_transform(flips, 0)
    image = np.zeros((8, 8, 1), np.float32)
    applied = [{n for n, _ in flips(image=image)["applied_transforms"]} for _ in range(400)]
    both = sum({"HorizontalFlip", "VerticalFlip"} <= a for a in applied) / 400
    assert 0.15 < both < 0.35  # independent: 0.25; tied together: 0.5


def test_loader_workers_follow_the_trials_cpus():
    cuda = torch.device("cuda")
    assert loader_workers(3, 8, cuda) == 3  # an explicit count wins
    assert loader_workers(None, 4, cuda) == 3
    assert loader_workers(None, 1, cuda) == 1
    assert loader_workers(None, None, cuda) == 1
    assert loader_workers(None, 8, CPU) == 0  # the CPU step uses the cores itself


def test_trial_config_takes_the_training_spec_fields():
    from sweeper.spec import TrainingSpec

    fields = TrainingSpec().model_dump()
    for name in ("num_workers", "channels_last", "compile", "gpu_augmentation"):
        assert name in fields and name in TrialConfig.model_fields
    cfg = TrialConfig.from_dict(
        {
            "cache_dir": "x",
            "fold": 0,
            "arch": "unet",
            "encoder": "resnet18",
            "loss": "dice",
            "cpus_per_trial": 4,
            **fields,
        }
    )
    assert cfg.num_workers is None and cfg.cpus_per_trial == 4


# ---- CPU augmentation: same distributions, cheaper maths ------------------------------------------


def test_elastic_field_has_albumentations_spread():
    rng = np.random.default_rng(0)
    g = SEED000_GEOMETRY
    stock = [
        np.std(
            np.stack(
                fgeometric.generate_displacement_fields(
                    (64, 64), g.elastic_alpha, g.elastic_sigma, False, (0, 0), rng, "uniform"
                )
            )
        )
        for _ in range(300)
    ]
    ours = [np.std(smooth_displacement((64, 64), g.elastic_alpha, g.elastic_sigma, rng)) for _ in range(300)]
    assert np.mean(ours) == pytest.approx(np.mean(stock), rel=0.12)


def test_intensity_transforms_match_albumentations():
    image = np.random.default_rng(1).random((16, 16, 3), dtype=np.float32)
    ours = build_augmentation(16, intensity=True, geometric=False).transforms
    stock_bc = A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2)
    np.testing.assert_allclose(
        ours[0].apply(image, alpha=1.15, beta=-0.1), stock_bc.apply(image, alpha=1.15, beta=-0.1), atol=1e-6
    )
    np.testing.assert_allclose(ours[1].apply(image, gamma=1.1), A.RandomGamma().apply(image, gamma=1.1), atol=1e-5)


def test_geometric_false_keeps_only_intensity_transforms():
    names = [type(t).__name__ for t in build_augmentation(32, geometric=False).transforms]
    assert names == ["_BrightnessContrast", "_Gamma"]
    assert build_augmentation(32, "none", geometric=False) is None


# ---- on-device augmentation ----------------------------------------------------------------------


def test_gpu_augmentation_keeps_shapes_and_binary_masks():
    augment = BatchGeometricAugment("seed000", seed=0)
    images = torch.rand(8, 3, 40, 48)
    masks = (torch.rand(8, 3, 40, 48) > 0.7).float()
    out_images, out_masks = augment(images, masks)
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(out_images).all()
    assert isinstance(augment.last_params, GeometricParams)
    identity = BatchGeometricAugment("none")(images, masks)
    assert identity[0] is images


def test_gpu_augmentation_keeps_one_hot_masks_one_hot():
    """Softmax masks: pixels warped in from outside the slice become background, as on the CPU path."""
    b, size = 4, 32
    labels = torch.randint(0, 3, (b, size, size))
    masks = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()  # channel 0 background
    shifted = _no_op_params(b, size, affine=torch.ones(b, dtype=torch.bool), translate=torch.full((b, 2), 0.25))
    _, plain = apply_geometric(torch.rand(b, 3, size, size), masks.clone(), shifted)
    _, fixed = apply_geometric(torch.rand(b, 3, size, size), masks.clone(), shifted, one_hot=True)
    assert (plain.sum(dim=1) == 0).any()  # the zero-filled border holds no class at all ...
    assert (fixed.sum(dim=1) == 1).all()  # ... unless it is made background
    torch.testing.assert_close(fixed[:, 1:], plain[:, 1:], rtol=0, atol=0)
    assert BatchGeometricAugment(seed=0, one_hot=True)(torch.rand(b, 3, size, size), masks)[1].sum(dim=1).eq(1).all()


def test_gpu_augmentation_is_reproducible_per_seed():
    images, masks = torch.rand(4, 3, 32, 32), (torch.rand(4, 3, 32, 32) > 0.5).float()
    a = BatchGeometricAugment(seed=5)(images, masks)[0]
    b = BatchGeometricAugment(seed=5)(images, masks)[0]
    c = BatchGeometricAugment(seed=6)(images, masks)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def _no_op_params(b: int, size: int, **over) -> GeometricParams:
    false = torch.zeros(b, dtype=torch.bool)
    params = dict(
        hflip=false,
        vflip=false,
        affine=false,
        rotate=torch.zeros(b),
        scale=torch.ones(b, 2),
        translate=torch.zeros(b, 2),
        elastic=false,
        grid=false,
        displacement=torch.zeros(b, 2, size, size),
        grid_x=torch.arange(size).float().expand(b, size),
        grid_y=torch.arange(size).float().expand(b, size),
    )
    return GeometricParams(**{**params, **over})


def test_gpu_flip_and_affine_match_opencv():
    size = 48
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.sin(xx / 5.0) + np.cos(yy / 7.0) + xx / size  # smooth, asymmetric
    rotate, scale, translate = 10.0, (1.05, 0.95), (3 / size, -2 / size)
    true = torch.ones(1, dtype=torch.bool)
    params = _no_op_params(
        1,
        size,
        hflip=true,
        affine=true,
        rotate=torch.tensor([rotate]),
        scale=torch.tensor([scale]),
        translate=torch.tensor([translate]),
    )
    ours = apply_geometric(torch.from_numpy(image)[None, None], torch.zeros(1, 1, size, size), params)[0][0, 0].numpy()
    matrix = fgeometric.create_affine_transformation_matrix(
        {"x": 3, "y": -2}, {"x": 0, "y": 0}, {"x": scale[0], "y": scale[1]}, rotate, fgeometric.center((size, size))
    )
    expected = cv2.warpAffine(
        np.ascontiguousarray(image[:, ::-1]),
        matrix[:2],
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    inner = slice(8, size - 8)
    np.testing.assert_allclose(ours[inner, inner], expected[inner, inner], atol=0.02)


def test_gpu_grid_distortion_matches_albumentations_grid():
    steps_x = [1.2, 0.8, 1.1, 0.95, 1.05, 0.9]
    steps_y = [0.75, 1.3, 1.0, 1.1, 0.9, 1.25]
    for height, width in [(224, 224), (37, 50)]:
        normalised = fgeometric.normalize_grid_distortion_steps((height, width), 5, list(steps_x), list(steps_y))
        map_x, map_y = fgeometric.generate_grid((height, width), normalised["steps_x"], normalised["steps_y"], 5)
        ours_x = _grid_coordinates(torch.tensor([steps_x], dtype=torch.float64), width, 5)[0].numpy()
        ours_y = _grid_coordinates(torch.tensor([steps_y], dtype=torch.float64), height, 5)[0].numpy()
        np.testing.assert_allclose(ours_x, map_x[0], atol=1e-3)
        np.testing.assert_allclose(ours_y, map_y[:, 0], atol=1e-3)


def test_both_paths_draw_the_same_parameter_distributions():
    n, size = 1500, 64
    cpu = record_geometric_parameters(n, image_size=size, seed=0)
    gpu = BatchGeometricAugment(seed=0).sample(n, size, size)
    gpu_np = {k: getattr(gpu, k).numpy() for k in ("hflip", "vflip", "affine", "elastic", "grid")}
    g = SEED000_GEOMETRY
    tolerance = 4 * math.sqrt(0.25 / n)  # 4 standard errors of a rate
    for key, p in [
        ("hflip", g.hflip_p),
        ("vflip", g.vflip_p),
        ("affine", g.affine_p),
        ("elastic", g.warp_p / 2),
        ("grid", g.warp_p / 2),
    ]:
        assert abs(cpu[key].mean() - p) < tolerance, key
        assert abs(gpu_np[key].mean() - p) < tolerance, key
    assert not (gpu_np["elastic"] & gpu_np["grid"]).any() and not (cpu["elastic"] & cpu["grid"]).any()
    # continuous parameters: same range and uniform moments on both paths
    applied = gpu.affine.numpy()
    pairs = {
        "rotate": (cpu["rotate"], gpu.rotate.numpy()[applied], g.rotate),
        "scale": (cpu["scale"].ravel(), gpu.scale.numpy()[applied].ravel(), g.scale),
        "translate": (cpu["translate"].ravel(), gpu.translate.numpy()[applied].ravel(), g.translate),
    }
    for key, (a, b, (low, high)) in pairs.items():
        width = high - low
        edge = 0.05 * width + (1 / size if key == "translate" else 0)  # translation: whole pixels
        for values in (a, b):
            assert values.min() >= low - 1e-9 and values.max() <= high + 1e-9, key
            assert values.min() < low + edge and values.max() > high - edge, key
        assert abs(a.mean() - b.mean()) < 0.05 * width, key
        assert a.std() == pytest.approx(b.std(), rel=0.1), key
    cpu_spread = cpu["displacement_std"].mean()
    gpu_spread = gpu.displacement.flatten(1).std(dim=1).mean().item()
    assert gpu_spread == pytest.approx(cpu_spread, rel=0.15)


# ---- training step switches -----------------------------------------------------------------------


def _small_net() -> torch.nn.Module:
    # convolutions + batch norm: what channels-last and compile change; a U-Net is 20x slower here
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1, stride=2),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Upsample(scale_factor=2),
        torch.nn.Conv2d(16, 3, 1),
    )


def _three_steps(channels_last: bool, compile: bool = False, augment=None):
    torch.manual_seed(0)
    model = _small_net()
    # SGD: the update is linear in the gradient, so rounding differences stay rounding-sized (Adam's
    # normalisation would blow a near-zero gradient's rounding up to a full lr-sized step)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(
        model,
        build_loss("dice"),
        optimizer,
        scaler,
        device=CPU,
        channels_last=channels_last,
        compile=compile,
        augment=augment,
    )
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(3):
        images = torch.rand(4, 3, 32, 32, generator=generator)
        masks = (torch.rand(4, 3, 32, 32, generator=generator) > 0.8).float()
        losses.append(step(images, masks).item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_channels_last_does_not_change_the_step():
    plain_losses, plain_state = _three_steps(channels_last=False)
    cl_losses, cl_state = _three_steps(channels_last=True)
    assert cl_losses == pytest.approx(plain_losses, rel=1e-5, abs=1e-6)
    for key, value in plain_state.items():
        torch.testing.assert_close(cl_state[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compile_does_not_change_the_step():
    plain_losses, plain_state = _three_steps(channels_last=False)
    compiled_losses, compiled_state = _three_steps(channels_last=False, compile=True)
    assert compiled_losses == pytest.approx(plain_losses, rel=1e-4, abs=1e-5)
    assert compiled_state.keys() == plain_state.keys()  # the plain module's names: checkpoints unchanged


def test_the_step_applies_the_device_augmentation():
    plain, _ = _three_steps(channels_last=False)
    augmented, _ = _three_steps(channels_last=False, augment=BatchGeometricAugment(seed=0))
    assert augmented != plain


def test_a_fold_trains_with_gpu_augmentation(cache):
    reports = []
    config = dict(
        cache_dir=str(cache),
        fold=0,
        arch="unet",
        encoder="resnet18",
        loss="dice",
        image_size=32,
        batch_size=4,
        epochs=1,
        max_train_batches=2,
        gpu_augmentation=True,
        boundary_metrics=False,
    )
    run_fold(config, lambda metrics, _: reports.append(metrics))
    assert len(reports) == 1 and math.isfinite(reports[0]["train_loss"]) and "dice" in reports[0]
