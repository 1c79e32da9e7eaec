"""Start-up time and peak memory of the read-only commands and of ``sweeper validate``, before vs after.

"Before" is a git ref (default: the merge-base of HEAD with ``main``) checked out into a temporary
``git worktree``; "after" is this working tree. Each command runs in a fresh interpreter with
``PYTHONPATH`` pointing at one side, the two sides alternating within a round, on the same small sweep
folder (built here: frozen spec, a leaderboard of 2 configurations x 2 folds, Tune trial folders) and
the shipped demo spec. A run's peak resident memory is the child's ``ru_maxrss`` (``os.wait4``).

    python benchmarks/cli_startup.py [--ref REF] [--rounds 5] [--sweep SWEEP_DIR]

Prints, per command, the median wall time and peak RSS of each side and the median of the per-round
ratios after / before, and which of torch and Ray each side imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: runs one CLI command, then prints where sweeper came from and which heavy packages were imported
PROBE = """
import json, sys
import sweeper
from sweeper.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    heavy = sorted({m.split('.')[0] for m in sys.modules} & {"torch", "ray", "mlflow", "matplotlib"})
    print("PROBE " + json.dumps({"sweeper": sweeper.__file__, "heavy": heavy}))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def build_sweep(folder: Path) -> Path:
    """Writes a small finished sweep folder with the working tree's code; returns it."""
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from sweeper.leaderboard import FINISHED, trial_row, write_leaderboard
    from sweeper.spec import dump_spec, parse_spec
    from sweeper.trial_config import trial_settings
    from trainables.contract import Configuration

    sweep = folder / "small"
    spec = parse_spec(
        {
            "name": "small",
            "data": {"format": "synthetic", "folds": 2},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search"}}],
            "training": {"epochs": 2},
            "search": {"budget": 2},
        },
        registry=False,
    )
    sweep.mkdir(parents=True)
    (sweep / "spec.yaml").write_text(dump_spec(spec))
    settings = trial_settings(spec, sweep / "cache")
    rows = []
    for cid, loss, score in (("aaaa111111", "dice", 0.8), ("bbbb222222", "tversky", 0.6)):
        for fold in (0, 1):
            config = settings.for_fold(
                Configuration(arch="unet", encoder="mit_b2", loss=loss), config_id=cid, fold=fold
            )
            result = {
                "epoch": 2,
                "best_epoch": 2,
                "time_total_s": 5.0,
                "timestamp": 1_700_000_000 + 10 * fold,
                **{f"best.{m}": score + fold / 100 for m in ("dice", "sensitivity", "precision")},
            }
            rows.append(trial_row(config, result, FINISHED))
            trial_dir = sweep / "ray" / "tune" / f"{loss}-{cid}-fold{fold}-x"
            trial_dir.mkdir(parents=True)
            (trial_dir / "params.json").write_text(json.dumps(config.to_dict()))
            (trial_dir / "result.json").write_text(json.dumps(result) + "\n")
    write_leaderboard(pd.DataFrame(rows), sweep)
    return sweep


def run_once(root: Path, args: list[str], cwd: Path) -> tuple[float, float, dict]:
    """Returns (wall seconds, peak RSS in MiB, probe report) of ``sweeper ARGS`` run from ``root``'s code."""
    env = {**os.environ, "PYTHONPATH": str(root), "NO_ALBUMENTATIONS_UPDATE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", PROBE, *args], cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory, not the children's maximum
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if proc.returncode != 0 or "PROBE " not in text:
        raise RuntimeError(f"{' '.join(args)} from {root} failed:\n{errors[-2000:]}")
    report = json.loads(text.rsplit("PROBE ", 1)[1])
    if not Path(report["sweeper"]).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"{root}: sweeper was imported from {report['sweeper']}, not from PYTHONPATH")
    return wall, usage.ru_maxrss / 1024, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default=None, help="the 'before' git ref (default: merge-base of HEAD and main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--sweep", type=Path, default=None, help="a sweep folder to read (default: a small one built here)"
    )
    args = parser.parse_args()
    ref = args.ref or git("merge-base", "HEAD", "main")
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        git("worktree", "add", "--detach", str(before), ref)
        try:
            sweep = args.sweep or build_sweep(tmp)
            demo = ROOT / "search_spaces" / "demo.yaml"
            commands = {
                "status": ["status", str(sweep)],
                "leaderboard": ["leaderboard", str(sweep)],
                "pareto": ["pareto", str(sweep)],
                "compare": ["compare", str(sweep), "aaaa", "bbbb"],
                "validate": ["validate", str(demo)],
            }
            sides = {"before": before, "after": ROOT}
            runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
            heavy: dict[tuple[str, str], list[str]] = {}
            for _ in range(args.rounds):
                for name, argv in commands.items():
                    for side, root in sides.items():
                        wall, rss, report = run_once(root, argv, tmp)
                        runs.setdefault((name, side), []).append((wall, rss))
                        heavy[(name, side)] = report["heavy"]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)

    print(
        f"before = {ref[:12]} (git worktree), after = working tree; median of {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(
        f"{'command':<12} {'before s':>9} {'after s':>8} {'after/before':>12}   {'before MiB':>10} {'after MiB':>9} "
        f"{'after/before':>12}   imported before -> after"
    )
    for name in commands:
        b, a = runs[(name, "before")], runs[(name, "after")]
        time_ratio = statistics.median(ai[0] / bi[0] for ai, bi in zip(a, b))
        rss_ratio = statistics.median(ai[1] / bi[1] for ai, bi in zip(a, b))
        print(
            f"{name:<12} {statistics.median(x[0] for x in b):>9.2f} {statistics.median(x[0] for x in a):>8.2f} "
            f"{time_ratio:>11.2f}x   {statistics.median(x[1] for x in b):>10.0f} "
            f"{statistics.median(x[1] for x in a):>9.0f} {rss_ratio:>11.2f}x   "
            f"{','.join(heavy[(name, 'before')]) or '-'} -> {','.join(heavy[(name, 'after')]) or '-'}"
        )


if __name__ == "__main__":
    main()
