"""Forward + backward time of every registered loss relative to plain Dice, in one run.

    python benchmarks/losses.py [--batch 16] [--repeats 9] [--device cpu|cuda]

Each loss runs on the same (16, 3, 224, 224) logits (requires_grad) and 0/1 target; time is
the median over ``--repeats`` timed calls of ``loss(logits, target).backward()`` after warm-up
calls, with a device synchronisation around each call on CUDA. The ratio is that median over
Dice's median, all measured in this run (the order of losses is shuffled per repeat so drift
of the machine does not favour the first or last). Every loss should stay within 1.25x of
Dice; the ones whose maths forbids it are listed with the reason.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.losses import CALF_TRANSFORMS, LOSSES, CalfLoss, build_loss  # noqa: E402

TARGET_RATIO = 1.25

# Losses allowed above TARGET_RATIO, and why: the maths needs work Dice does not do.
EXPECTED_SLOWER = {
    "topk_ce": "selects the K% hardest of all N*C*H*W pixel losses (torch.topk over the batch): "
    "a partial sort on top of the BCE, which itself costs about as much as Dice",
    "topk_dice": "ranks each image-class's foreground errors (torch.topk per row) to build the "
    "selection mask before the Dice sums",
    "calf[fisher]": "two atanh per element on clamped probabilities (transcendentals) instead of Dice's sums",
    "calf[arcsine]": "sqrt and asin per element on clamped probabilities (transcendentals)",
    "calf[logit]": "logit (two logs) per element on clamped probabilities",
    "calf[bce_dice]": "is BCE plus Dice: at least the cost of both",
    "dice_soft_bce": "is Dice plus SoftBCE: at least the cost of both",
    "focal_plus_dice": "is Focal plus Dice: at least the cost of both",
    "focal": "BCE plus the focusing factor (expm1, pow) per element",
    "pm_dice": "the modulating term |y - p|^gamma and a squared denominator: extra per-pixel passes",
    "weighted_ce": "BCE with per-element weights (two broadcast weight tensors)",
}


def _cases(n_channels: int) -> dict[str, torch.nn.Module]:
    context = {"weighted_ce": {"class_frequencies": [0.05] * n_channels}}
    cases = {}
    for name in sorted(LOSSES):
        if name == "calf":
            for transform in CALF_TRANSFORMS:
                cases[f"calf[{transform}]"] = CalfLoss(transform=transform)
            continue
        cases[name] = build_loss(name, **context.get(name, {}))
    return cases


def _time_once(loss: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor, device: torch.device) -> float:
    logits.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    loss(logits, target).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    logits = (torch.randn(shape, generator=gen) * 3).to(device).requires_grad_(True)
    target = (torch.rand(shape, generator=gen) < 0.1).float().to(device)
    cases = {name: loss.to(device) for name, loss in _cases(args.channels).items()}

    for loss in cases.values():
        for _ in range(args.warmup):
            _time_once(loss, logits, target, device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    rng = random.Random(0)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for name in order:
            times[name].append(_time_once(cases[name], logits, target, device))

    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["dice"]
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"forward + backward on {tuple(shape)} float32, {device}{threads}, median of {args.repeats} (warm-up {args.warmup})")
    print(f"{'loss':<20} {'ms':>8} {'x dice':>7}  note")
    over = 0
    for name in sorted(cases, key=lambda n: medians[n]):
        ratio = medians[name] / base
        note = ""
        if ratio > TARGET_RATIO:
            reason = EXPECTED_SLOWER.get(name)
            note = f"over {TARGET_RATIO}x: {reason}" if reason else f"over {TARGET_RATIO}x: UNEXPECTED"
            over += reason is None
        print(f"{name:<20} {medians[name] * 1e3:8.2f} {ratio:7.2f}  {note}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
