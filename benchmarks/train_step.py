"""Images per second of the training step, ours vs a plain fp32 loop on the naive loader, per model.

    python benchmarks/train_step.py [--image-size 224] [--batch 16] [--steps 10] [--rounds 3]
                                    [--models unet/mit_b2,unet/resnet34,fpn/resnet34] [--workers N]
                                    [--compile]
    python benchmarks/train_step.py --image-size 96 --batch 4 --steps 3 --rounds 3   # CPU, ~2 minutes

- **plain**: ``NaivePngDataset`` (PNG decode + RLE + resize per item, stock Albumentations seed000;
  see ``benchmarks/loader.py``) in a DataLoader with the same worker count, fp32, contiguous
  tensors, non-fused AdamW, and ``loss.item()`` every step (the host waits for the device each step,
  as a loop that logs or checks the loss does).
- **ours**: what ``trainables.train`` runs: ``SliceDataset`` over the memory-mapped cache with the
  cheaper seed000 pipeline, ``loader_settings`` (workers from ``--cpus``, pinned memory,
  persistent workers, prefetch), ``TrainStep``: AMP (bf16, or fp16 + scaler) and channels-last
  on CUDA, fused AdamW on CUDA, optional ``torch.compile``, no host sync per step.

Per model, a round runs ``--steps`` timed steps of each variant (order alternating between
rounds) after 2 warm-up steps the first time; the ratio is the median of per-round ratios. The
device is synchronised at the end of each timed block. On CPU with in-process loading the clock is
this process's CPU time (one torch thread by default), elsewhere wall time. On CUDA the GPU's utilisation is sampled
(``torch.cuda.utilization``, else ``nvidia-smi``) every 50 ms while each variant runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader import NaivePngDataset, stock_seed000  # noqa: E402

from trainables.data import SliceDataset, build_augmentation, generate_uwmgi, prepare_cache  # noqa: E402
from trainables.data.augment import seed_transform  # noqa: E402
from trainables.losses import build_loss  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.train import TrainStep, TrialConfig, _amp_dtype, loader_settings  # noqa: E402


class UtilisationSampler:
    """Samples GPU utilisation (%) in a thread while active; ``mean()`` of the samples (None off CUDA)."""

    def __init__(self, device: torch.device, period: float = 0.05):
        self.device, self.period, self.samples = device, period, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 - no pynvml: ask nvidia-smi
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", str(self.device.index or 0)], capture_output=True, text=True, timeout=5)
                return float(out.stdout.strip().splitlines()[0])
            except Exception:  # noqa: BLE001
                return None

    def __enter__(self):
        if self.device.type == "cuda":
            def loop():
                while not self._stop.is_set():
                    value = self._read()
                    if value is not None:
                        self.samples.append(value)
                    self._stop.wait(self.period)

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Plain:
    """The naive loop: fp32, contiguous, non-fused AdamW, ``loss.item()`` each step."""

    def __init__(self, arch, encoder, root, args, device, workers):
        self.device = device
        self.model = build_model(arch, encoder, in_channels=3, classes=3).to(device)
        self.criterion = build_loss("dice")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=2e-4, foreach=False)
        transform = stock_seed000()
        seed_transform(transform, 0)
        loader = DataLoader(NaivePngDataset(root, args.image_size, transform=transform), batch_size=args.batch,
                            shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0)
        self.batches = itertools.chain.from_iterable(itertools.repeat(loader))

    def step(self) -> None:
        images, masks = next(self.batches)
        images, masks = images.to(self.device), masks.to(self.device)
        self.optimizer.zero_grad()
        loss = self.criterion(self.model(images), masks)
        loss.backward()
        self.optimizer.step()
        loss.item()


class Ours:
    """``trainables.train``'s loaders and ``TrainStep``."""

    def __init__(self, arch, encoder, cache, args, device, workers):
        self.device = device
        cfg = TrialConfig(cache_dir=str(cache), fold=0, arch=arch, encoder=encoder, loss="dice",
                          image_size=args.image_size, batch_size=args.batch, num_workers=workers,
                          cpus_per_trial=args.cpus, compile=args.compile)
        model = build_model(arch, encoder, in_channels=3, classes=3).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, fused=device.type == "cuda")
        amp_dtype = _amp_dtype(device) if device.type == "cuda" else torch.float32
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.step_fn = TrainStep(model, build_loss("dice"), optimizer, scaler, device=device, amp_dtype=amp_dtype,
                                 channels_last=device.type == "cuda", compile=args.compile)
        dataset = SliceDataset(cache, [0, 1], transform=build_augmentation(args.image_size, seed=0))
        loader = DataLoader(dataset, shuffle=True, drop_last=True, **loader_settings(cfg, device))
        self.batches = itertools.chain.from_iterable(itertools.repeat(loader))
        self.loss_sum = torch.zeros((), device=device)

    def step(self) -> None:
        images, masks = next(self.batches)
        self.loss_sum += self.step_fn(images, masks)


def _block(variant, steps: int, device: torch.device, clock=time.perf_counter) -> float:
    _sync(device)
    start = clock()
    for _ in range(steps):
        variant.step()
    _sync(device)
    return clock() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="unet/mit_b2,unet/resnet34,fpn/resnet34")
    parser.add_argument("--cpus", type=float, default=float(len(os.sched_getaffinity(0))),
                        help="the trial's CPUs (sizes our loader's workers)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of BOTH variants (default: ours from --cpus, plain the same)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (not the plain one)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 on CPU -- thread barriers stall on a shared machine -- "
                        "torch's default on CUDA)")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    source = args.image_size + 64
    work = args.data or Path(tempfile.gettempdir()) / f"sweeper-bench-step-{source}"
    root = generate_uwmgi(work / "data", cases=4, slices_per_scan=32, image_size=source, seed=0)
    cache = prepare_cache(root, work / "cache", image_size=args.image_size, n_folds=2)
    from trainables.train import loader_workers

    workers = args.workers if args.workers is not None else loader_workers(None, args.cpus, device)
    # on CPU with in-process loading, this process's CPU time is the work (other sessions' load on a
    # shared machine does not count); with workers or a GPU, wall time
    clock = time.process_time if device.type == "cpu" and workers == 0 else time.perf_counter
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device: {device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores; batch {args.batch} x 3 x {args.image_size}^2; loader workers {workers} (both); "
          f"{args.rounds} rounds x {args.steps} steps; compile={args.compile}; "
          f"clock: {'process CPU time' if clock is time.process_time else 'wall'}")
    if device.type == "cuda":
        print(f"ours: AMP {_amp_dtype(device)}, channels-last, fused AdamW, pinned memory, no per-step sync")
    else:
        print("ours on CPU: fp32 (AMP is CUDA-only), contiguous; the difference is the loader and no per-step sync")
    print(f"\n{'model':18s} {'plain img/s':>11s} {'ours img/s':>11s} {'ours/plain':>10s} "
          f"{'GPU% plain':>10s} {'GPU% ours':>9s}")
    for spec in args.models.split(","):
        arch, encoder = spec.split("/")
        torch.manual_seed(0)
        variants = {"plain": Plain(arch, encoder, root, args, device, workers),
                    "ours": Ours(arch, encoder, cache, args, device, workers)}
        for v in variants.values():  # warm-up: workers start, cudnn picks kernels, compile
            _block(v, 2, device)
        rates: dict[str, list[float]] = {k: [] for k in variants}
        utilisation: dict[str, list[float]] = {k: [] for k in variants}
        ratios = []
        for r in range(args.rounds):
            names = list(variants) if r % 2 == 0 else list(reversed(variants))
            got = {}
            for n in names:
                with UtilisationSampler(device) as sampler:
                    got[n] = args.steps * args.batch / _block(variants[n], args.steps, device, clock)
                if sampler.mean() is not None:
                    utilisation[n].append(sampler.mean())
                rates[n].append(got[n])
            ratios.append(got["ours"] / got["plain"])

        def util(n):
            return f"{statistics.mean(utilisation[n]):9.0f}%" if utilisation[n] else f"{'-':>10s}"

        print(f"{spec:18s} {statistics.median(rates['plain']):11.1f} {statistics.median(rates['ours']):11.1f} "
              f"{statistics.median(ratios):9.2f}x {util('plain'):>10s} {util('ours'):>9s}", flush=True)
        del variants
    return 0


if __name__ == "__main__":
    sys.exit(main())
