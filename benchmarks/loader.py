"""Slices per second per core: the naive PNG loader vs ours (SliceDataset on the prepared cache),
with and without augmentation, in one run.

    python benchmarks/loader.py [--source-size 288] [--image-size 224] [--cases 4] [--slices 48]
                                [--rounds 7] [--block 96] [--data DIR]

The data set is generated in the UW-Madison GI format (``generate_uwmgi``) with slices of
``--source-size`` (and +16 px, so every slice is resized), then prepared once into the cache.

- **naive**: per 2.5D slice, decode the three PNGs (``cv2.IMREAD_UNCHANGED``), min-max each,
  resize each to ``--image-size`` (as ``prepare_cache``), decode the three class RLEs of the target
  slice from train.csv's strings and resize them (nearest); augmentation is the seed000
  pipeline built from stock Albumentations transforms (as first shipped, before the cheaper one).
- **ours**: ``SliceDataset`` over the float16 cache read through memory maps, with
  ``build_augmentation`` (same parameter distributions, cheaper elastic field and intensity maths).
- **ours, stock aug** isolates the I/O gain; **ours, intensity only** is the CPU share when
  ``training.gpu_augmentation`` moves the geometric transforms onto the device.

Everything runs in this process on one core (``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``,
BLAS threads 1), through a ``DataLoader(num_workers=0, batch_size=16)`` so collation counts; rates
are slices per CPU-second of this process (= per core, whatever else runs on the machine). A
round times a block of ``--block`` slices of every variant, in a shuffled order; the ratios are
medians over rounds of ratios taken within a round (robust to a shared machine's drifting load).
Afterwards a profile gives each transform's expected cost per slice (cost when applied x its
probability), stock vs ours. Exit status 1 when a target is missed.

Two throughputs for a GPU machine (``benchmarks/gpu_check.py`` calls the same functions):

- ``--workers N``: slices/s the trial's DataLoader (``loader_settings``: N worker processes, pinned
  memory on CUDA, persistent workers, prefetch) delivers with seed000's full augmentation and with
  the intensity transforms only (what is left on the CPU with ``training.gpu_augmentation``);
  wall clock, for ``--seconds`` after two warm-up batches;
- ``--device cuda``: slices/s of :class:`~trainables.data.gpu_augment.BatchGeometricAugment`
  (seed000's flips, affine and warp as one ``grid_sample``) on batches already on the device.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.data import (  # noqa: E402
    GI_CLASSES,
    SliceDataset,
    build_augmentation,
    context_positions,
    generate_uwmgi,
    prepare_cache,
    read_uwmgi,
    rle_decode,
)
from trainables.data.augment import SEED000_GEOMETRY, SEED000_INTENSITY, seed_transform  # noqa: E402
from trainables.data.gpu_augment import BatchGeometricAugment  # noqa: E402

TARGET_PLAIN = 10.0  # ours / naive without augmentation
TARGET_AUGMENTED = 2.5  # ours / naive with augmentation
TARGET_RATE = 500.0  # ours, augmented, slices/s per core


def stock_seed000() -> A.Compose:
    """Returns seed000 as first shipped: stock Albumentations transforms, same ranges."""
    g, i = SEED000_GEOMETRY, SEED000_INTENSITY
    return A.Compose(
        [
            A.HorizontalFlip(p=g.hflip_p),
            A.VerticalFlip(p=g.vflip_p),
            A.Affine(
                scale=g.scale,
                translate_percent=g.translate,
                rotate=g.rotate,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=g.affine_p,
            ),
            A.OneOf(
                [
                    A.ElasticTransform(alpha=g.elastic_alpha, sigma=g.elastic_sigma, p=1.0),
                    A.GridDistortion(num_steps=g.grid_steps, distort_limit=g.grid_distort, p=1.0),
                ],
                p=g.warp_p,
            ),
            A.RandomBrightnessContrast(
                brightness_limit=i.brightness, contrast_limit=i.contrast, p=i.brightness_contrast_p
            ),
            A.RandomGamma(gamma_limit=i.gamma, p=i.gamma_p),
        ]
    )


def _normalise(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    return np.zeros_like(image) if hi <= lo else (image - lo) / (hi - lo)


class NaivePngDataset(Dataset):
    """The loader a first notebook writes: every item decodes its PNGs and RLEs from scratch."""

    def __init__(self, root: Path, image_size: int, context: int = 1, transform=None):
        records = read_uwmgi(root)  # train.csv parsed once, as a DataFrame-based loader would
        self.scans: dict[str, list] = {}
        for rec in records:
            self.scans.setdefault(rec.scan, []).append(rec)
        self.items = [(rec.scan, k) for scan in self.scans.values() for k, rec in enumerate(scan)]
        self.image_size, self.context, self.transform = image_size, context, transform

    def __len__(self) -> int:
        return len(self.items)

    def _resize(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.resize(array, (self.image_size, self.image_size), interpolation=interpolation)

    def __getitem__(self, i: int):
        scan, position = self.items[i]
        records = self.scans[scan]
        channels = []
        for p in context_positions(position, len(records), self.context):
            raw = cv2.imread(str(records[p].path), cv2.IMREAD_UNCHANGED)
            channels.append(self._resize(_normalise(raw), cv2.INTER_AREA))
        image = np.stack(channels, axis=-1)
        rec = records[position]
        mask = np.stack(
            [self._resize(rle_decode(rec.rles[c], (rec.height, rec.width)), cv2.INTER_NEAREST) for c in GI_CLASSES],
            axis=-1,
        )
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return (
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 0, 1), dtype=np.float32)),
        )


def _time_block(dataset: Dataset, indices: list[int]) -> float:
    """Returns slices per CPU-second reading ``indices`` through a single-process DataLoader.

    CPU time of this process, not wall time: with every library on one thread it is the work one
    core does, and it does not count the time other processes on a shared machine hold the core.
    """
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=16, num_workers=0)
    start = time.process_time()
    n = sum(len(images) for images, _ in loader)
    return n / (time.process_time() - start)


def _profile(image_size: int, repeats: int) -> list[tuple[str, float, float]]:
    """Returns (transform, stock ms, ours ms) expected per slice: ms when applied x probability."""
    rng = np.random.default_rng(0)
    image = rng.random((image_size, image_size, 3), dtype=np.float32)
    mask = (rng.random((image_size, image_size, 3)) > 0.9).astype(np.uint8)

    def flat(pipeline) -> list:
        out = []
        for t in pipeline.transforms:
            if isinstance(t, A.OneOf):  # each member applies with p(OneOf) / n
                out += [(m, t.p / len(t.transforms)) for m in t.transforms]
            else:
                out.append((t, t.p))
        return out

    def cost(transform) -> float:
        transform.p = 1.0  # a fresh pipeline's transform, timed alone
        transform = A.Compose([transform])
        seed_transform(transform, 0)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            transform(image=image, mask=mask)
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    rows = []
    for (stock, p), (ours, _) in zip(flat(stock_seed000()), flat(build_augmentation(image_size)), strict=True):
        rows.append((type(stock).__name__, cost(stock) * p, cost(ours) * p))
    return rows


def pipeline_rate(
    dataset: Dataset, *, workers: int, batch: int, seconds: float, device: torch.device, warmup_batches: int = 2
) -> float:
    """Returns slices/s (wall clock) that a trial's training DataLoader over ``dataset`` delivers:
    Sweeper's ``loader_settings`` with ``workers`` processes, shuffled, whole batches, epochs
    repeating, timed for ``seconds`` after ``warmup_batches`` (worker start-up not counted)."""
    from trainables.train import TrialConfig, loader_settings

    cfg = TrialConfig(
        cache_dir="", fold=0, arch="unet", encoder="resnet34", loss="dice", batch_size=batch, num_workers=workers
    )
    loader = DataLoader(dataset, shuffle=True, drop_last=len(dataset) > batch, **loader_settings(cfg, device))
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    for _ in range(warmup_batches):
        next(batches)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += len(next(batches)[0])
    rate = n / (time.perf_counter() - start)
    del batches, loader  # stops the persistent workers
    gc.collect()
    return rate


def device_augment_rate(batch: int, image_size: int, device: torch.device, seconds: float) -> float:
    """Returns slices/s of ``BatchGeometricAugment("seed000")`` on (batch, 3, size, size) images and
    masks already on ``device`` (parameters drawn on the device too), device-synchronised."""
    augment = BatchGeometricAugment("seed000", seed=0, device=device)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, image_size, image_size, generator=generator).to(device)
    masks = (torch.rand(batch, 3, image_size, image_size, generator=generator) > 0.8).float().to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    augment(images, masks)  # warm-up: the elastic basis, kernels
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        augment(images, masks)
        n += batch
    sync()
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--source-size", type=int, default=288, help="side of the generated PNGs (resized to --image-size)"
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--slices", type=int, default=48, help="slices per scan")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=int, default=96, help="slices per variant per round")
    parser.add_argument(
        "--data", type=Path, default=None, help="folder for the data set and cache (default: a temp folder)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="also the trial DataLoader's slices/s with this many worker processes"
    )
    parser.add_argument("--device", default=None, help="also on-device augmentation slices/s here (cuda, cpu)")
    parser.add_argument("--batch", type=int, default=32, help="batch of --workers and --device")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds of --workers and --device")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    work = (
        args.data or Path(tempfile.gettempdir()) / f"sweeper-bench-loader-{args.source_size}-{args.cases}x{args.slices}"
    )
    start = time.perf_counter()
    root = generate_uwmgi(
        work / "data", cases=args.cases, slices_per_scan=args.slices, image_size=args.source_size, seed=0
    )
    cache = prepare_cache(root, work / "cache", image_size=args.image_size, n_folds=2)
    print(
        f"data: {args.cases * args.slices} slices of {args.source_size}-{args.source_size + 16} px -> "
        f"{args.image_size} ({time.perf_counter() - start:.1f} s to generate + cache)"
    )

    def ours(transform):
        return SliceDataset(cache, [0, 1], transform=transform)

    def seeded(pipeline):
        seed_transform(pipeline, 0)
        return pipeline

    variants = {
        "naive": NaivePngDataset(root, args.image_size),
        "ours": ours(None),
        "naive + stock aug": NaivePngDataset(root, args.image_size, transform=seeded(stock_seed000())),
        "ours + stock aug": ours(seeded(stock_seed000())),
        "ours + aug": ours(build_augmentation(args.image_size, seed=0)),
        "ours + intensity only": ours(build_augmentation(args.image_size, geometric=False, seed=0)),
    }
    n = len(variants["ours"])
    assert len(variants["naive"]) == n
    order = random.Random(0)
    for dataset in variants.values():  # warm-up: page cache, lazy imports, the elastic basis
        _time_block(dataset, list(range(min(32, n))))
    rates: dict[str, list[float]] = {k: [] for k in variants}
    ratios: dict[str, list[float]] = {"plain": [], "augmented": [], "io only (stock aug both)": []}
    for _ in range(args.rounds):
        indices = [order.randrange(n) for _ in range(args.block)]
        names = list(variants)
        order.shuffle(names)
        got = {name: _time_block(variants[name], indices) for name in names}
        for name, rate in got.items():
            rates[name].append(rate)
        ratios["plain"].append(got["ours"] / got["naive"])
        ratios["augmented"].append(got["ours + aug"] / got["naive + stock aug"])
        ratios["io only (stock aug both)"].append(got["ours + stock aug"] / got["naive + stock aug"])

    print(
        f"\nslices per CPU-second (one core), median of {args.rounds} rounds x {args.block} slices "
        f"(torch threads 1, cv2 threads 1), {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"{'variant':28s} {'slices/s':>9s} {'ms/slice':>9s}")
    for name, values in rates.items():
        m = statistics.median(values)
        print(f"{name:28s} {m:9.0f} {1e3 / m:9.2f}")
    plain, augmented = statistics.median(ratios["plain"]), statistics.median(ratios["augmented"])
    rate = statistics.median(rates["ours + aug"])
    print("\nratios (median of per-round ratios)")
    for name, values in ratios.items():
        print(f"  ours / naive, {name:26s} {statistics.median(values):6.2f}x")
    checks = [
        (f"ours / naive without augmentation >= {TARGET_PLAIN:.0f}x", plain >= TARGET_PLAIN, f"{plain:.1f}x"),
        (f"ours / naive with augmentation >= {TARGET_AUGMENTED}x", augmented >= TARGET_AUGMENTED, f"{augmented:.2f}x"),
        (f"ours augmented >= {TARGET_RATE:.0f} slices/s per core", rate >= TARGET_RATE, f"{rate:.0f}/s"),
    ]
    print("\ntargets")
    for text, ok, value in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {text}: {value}")

    print(
        f"\nwhere augmentation time goes: expected ms per slice (ms when applied x probability), "
        f"{args.image_size} x {args.image_size} x 3"
    )
    rows = _profile(args.image_size, repeats=25)
    print(f"{'transform':28s} {'stock':>7s} {'ours':>7s}")
    for name, stock_ms, ours_ms in rows:
        print(f"{name:28s} {stock_ms:7.3f} {ours_ms:7.3f}")
    print(f"{'sum':28s} {sum(r[1] for r in rows):7.3f} {sum(r[2] for r in rows):7.3f}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.workers is not None:
        print(f"\ntrial DataLoader, {args.workers} workers, batch {args.batch}, {args.seconds:.0f} s wall each")
        for name, geometric in (("augmented (seed000)", True), ("intensity only", False)):
            dataset = ours(build_augmentation(args.image_size, geometric=geometric, seed=0))
            rate = pipeline_rate(dataset, workers=args.workers, batch=args.batch, seconds=args.seconds, device=device)
            print(f"  {name:26s} {rate:9.0f} slices/s")
    if args.device is not None:
        rate = device_augment_rate(args.batch, args.image_size, device, args.seconds)
        print(f"\non-device geometric augmentation ({device.type}, batch {args.batch}): {rate:.0f} slices/s")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
