"""One self-contained HTML report of a sweep, with the figures and tables of paper 000.

:func:`write_report` reads a sweep folder (``RESULTS/<name>``): the leaderboard, the per-epoch
history of every fold trial (Ray Tune's trial folders, else MLflow), the spec, and the best
configuration's best weights for one fold (for the qualitative figure). It writes
``SWEEP_DIR/report/report.html`` -- every image embedded as a base64 data URI, so the file can be
mailed or attached on its own -- and the PNGs beside it, then logs the folder as the ``report/``
artifact of the sweep's MLflow run.

Figures (paper 000's numbering): validation Dice per epoch (Fig. 4), overall Dice per
configuration with fold std (Fig. 5), per-organ Dice grouped by organ and as a heatmap (Figs. 6-7),
sensitivity vs precision with the Pareto front (Fig. 8), ground truth and prediction overlays on
typical and hardest validation slices (Fig. 9; predicted through the trial's own network, activation
and per-image dice, :mod:`trainables.inference`, with the settings the trial recorded). Tables: overall metrics (Table 1), per-organ Dice
(Table 2), per-organ sensitivity / precision (Table 3), the best configuration's full per-organ
metrics, 95% fold intervals, paired comparisons of the best configuration with each other one.

From the out-of-fold case records (:mod:`sweeper.report_evidence`, statistics of
:mod:`sweeper.evidence`): patient-level intervals (Tables 5-6, method named, a note when patients are
few), ranks against the best with Holm-adjusted paired tests (Table 7), threshold curves with average
precision (Fig. 10, Table 8), reliability curves with expected calibration error (Fig. 12, Table 9),
precision at matched sensitivity (Tables 10-11), the front with non-domination probabilities (Fig. 11,
Table 12) and rank stability (Fig. 13). A sweep without records gets a note and the fold-level content.

A sweep that prunes or constrains gets how far each configuration got (:mod:`sweeper.report_reach`:
Table 13, Fig. 14): how it ended, which pruning left it behind and at which rung, the constraint an
infeasible one breaks, its folds and epochs reached and its share of full training.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sweeper.leaderboard import (
    CONFIG_ID,
    FAILED,
    FINISHED,
    FOLD,
    LOSS,
    compare_configs,
    prunes_or_constrains,
    read_configs,
    read_trials,
    sweep_reach,
)
from sweeper.pareto import FRONT, WITHIN_NOISE, pareto_table, plot_front
from sweeper.paths import REPORT_DIR, REPORT_FILE, SweepPaths
from sweeper.spec import SweepSpec, parse_spec
from trainables.contract import BEST_WEIGHTS_FILE, TrialConfig

log = logging.getLogger(__name__)

OVERALL_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision")
#: configurations drawn in the crowded figures (curves, grouped bars): best per loss, then by dice
MAX_FEATURED = 10
ORGAN_COLOURS = {"large_bowel": (0.95, 0.75, 0.1), "small_bowel": (0.2, 0.8, 0.3), "stomach": (0.9, 0.2, 0.2)}
#: per-epoch columns kept from a trial's history (plus ``dice.<class>``)
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", *OVERALL_METRICS)
FALLBACK_COLOURS = [(0.2, 0.5, 0.95), (0.8, 0.3, 0.9), (0.1, 0.8, 0.8)]


@dataclass(frozen=True)
class Figure:
    """A written PNG with its caption."""

    key: str
    path: Path
    title: str
    caption: str


def write_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    *,
    log_to_mlflow: bool = True,
    max_slices: int = 256,
    evidence_settings=None,
) -> Path:
    """Returns the path of the written ``report.html`` (default ``SWEEP_DIR/report/report.html``).

    Args:
        sweep_dir: a sweep folder (``RESULTS/<name>``) with at least one ended fold trial.
        out_dir: where report.html and the PNGs go (default ``SWEEP_DIR/report``).
        tracking_uri: MLflow store holding the sweep run; default the spec's ``tracking.uri``, else
            ``sqlite:///SWEEP_DIR/../mlflow.db``. Used for the per-epoch history when the Ray Tune
            trial folders are gone, and to log the report as artifact ``report/`` of the sweep run.
        log_to_mlflow: log the report folder on the sweep's MLflow run (default True; skipped with a
            warning when the store or the run does not exist).
        max_slices: validation slices predicted on CPU for the qualitative figure (evenly spaced
            among the slices showing an organ; default 256).
        evidence_settings: the :class:`~sweeper.evidence.EvidenceSettings` of the patient-level
            section (default: the spec's ``evidence`` section, else the defaults).

    Raises:
        FileNotFoundError: no leaderboard (no trial of the sweep ended yet).
    """
    sweep_dir = Path(sweep_dir).resolve()
    paths = SweepPaths.at(sweep_dir)
    out = Path(out_dir) if out_dir else paths.report
    out.mkdir(parents=True, exist_ok=True)
    trials = read_trials(sweep_dir)
    spec = load_sweep_spec(sweep_dir)
    uri = tracking_uri or (spec.tracking.uri if spec and spec.tracking.uri else None)
    if uri is None:
        from sweeper.tracking import default_tracking_uri

        uri = default_tracking_uri(paths.results)
    name = spec.name if spec else sweep_dir.name
    # first: restoring missing case records refreshes the leaderboard's intervals, read next
    evidence = _patient_evidence(sweep_dir, trials, spec, evidence_settings, uri if _store_exists(uri) else None)
    configs = read_configs(sweep_dir)
    classes = list(spec.data.classes) if spec else organ_classes(configs)

    labels = config_labels(configs)
    scored = configs[configs["n_folds"] > 0].reset_index(drop=True)
    histories = load_histories(sweep_dir, uri if _store_exists(uri) else None, name)
    featured = featured_configs(scored)

    figures: list[Figure] = []
    notes: dict[str, str] = {}
    if not histories.empty and "dice" in histories:
        figures.append(plot_curves(histories, scored, featured, labels, out / "fig4_validation_dice.png"))
    else:
        notes["fig4"] = "No per-epoch history found (neither Ray Tune trial folders nor MLflow runs)."
    if not scored.empty:
        figures.append(plot_overall_dice(scored, labels, out / "fig5_overall_dice.png"))
        if all(f"dice.{c}" in scored for c in classes):
            figures.append(plot_organ_bars(scored, featured, labels, classes, out / "fig6_organ_dice.png"))
            figures.append(plot_organ_heatmap(scored, labels, classes, out / "fig7_organ_dice_heatmap.png"))
        if {"sensitivity", "precision"} <= set(scored.columns):
            path = out / "fig8_sensitivity_precision.png"
            plot_front(pareto_table(scored), None, path)
            figures.append(
                Figure(
                    "fig8",
                    path,
                    "Figure 8. Sensitivity versus precision",
                    "Fold means with 95% fold intervals, one colour per loss; open markers are "
                    "dominated beyond fold noise; the dashed staircase is the Pareto front.",
                )
            )
        try:
            qualitative = plot_qualitative(
                sweep_dir, scored, trials, spec, classes, out / "fig9_qualitative.png", max_slices=max_slices
            )
            figures.append(qualitative)
        except QualitativeUnavailable as err:
            notes["fig9"] = str(err)
    if not isinstance(evidence, str):
        from sweeper.report_evidence import write_figures

        figures += write_figures(evidence, featured, labels, out)
    reach = sweep_reach(configs, trials, spec) if prunes_or_constrains(spec, sweep_dir, trials) else None
    if reach is not None and len(reach):
        from sweeper.report_reach import FIGURE_FILE, plot_reach

        figures.append(plot_reach(reach, labels, out / FIGURE_FILE))

    page = render_html(
        name=name,
        sweep_dir=sweep_dir,
        spec=spec,
        trials=trials,
        configs=configs,
        scored=scored,
        labels=labels,
        classes=classes,
        figures=figures,
        notes=notes,
        evidence=evidence,
        reach=reach,
    )
    html_path = out / REPORT_FILE
    html_path.write_text(page, encoding="utf-8")
    if log_to_mlflow:
        log_report(out, uri, name)
    return html_path


# -- inputs --------------------------------------------------------------------------------------------
def _patient_evidence(
    sweep_dir: Path, trials: pd.DataFrame, spec: SweepSpec | None, settings, tracking_uri: str | None
):
    """Returns the report's patient-level evidence (:func:`sweeper.report_evidence.load_evidence`), or a
    sentence saying why there is none; a failure to compute it is logged and said, never fatal."""
    from sweeper.report_evidence import load_evidence

    try:
        return load_evidence(sweep_dir, trials, spec, settings, tracking_uri)
    except (ValueError, KeyError, OSError) as err:
        log.exception("patient-level evidence not computed")
        return f"The patient-level statistics could not be computed from the case records: {err}"


def load_sweep_spec(sweep_dir: Path) -> SweepSpec | None:
    """Returns the sweep's frozen spec (``spec.yaml``), or None when the folder has none."""
    path = SweepPaths.at(sweep_dir).spec_file
    if not path.is_file():
        return None
    return parse_spec(yaml.safe_load(path.read_text()), str(path))


def organ_classes(configs: pd.DataFrame) -> list[str]:
    """Returns the class names found in ``dice.<class>`` columns."""
    return sorted(
        c.split(".", 1)[1]
        for c in configs.columns
        if c.startswith("dice.") and not c.endswith(("_std", "_ci_low", "_ci_high"))
    )


def config_labels(configs: pd.DataFrame) -> dict[str, str]:
    """Returns config_id -> a short readable label: ``loss (knob=value, ...) id``; model added when it varies."""
    model_columns = [c for c in ("arch", "encoder", "heads") if c in configs]
    several_models = configs[model_columns].drop_duplicates().shape[0] > 1
    labels = {}
    for row in configs.itertuples():
        knobs = json.loads(row.loss_params) if isinstance(row.loss_params, str) else dict(row.loss_params or {})
        knob_text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in knobs.items())
        heads = f" {row.heads}" if getattr(row, "heads", "multiclass") != "multiclass" else ""
        model = f" {row.arch}/{row.encoder}{heads}" if several_models else ""
        labels[row.config_id] = f"{row.loss}{' (' + knob_text + ')' if knob_text else ''}{model} {row.config_id[:6]}"
    return labels


def featured_configs(scored: pd.DataFrame, limit: int = MAX_FEATURED) -> list[str]:
    """Returns the config_ids drawn in crowded figures: each loss's best by dice, then the next best."""
    ranked = scored.sort_values("dice", ascending=False, kind="stable") if "dice" in scored else scored
    chosen = list(ranked.drop_duplicates("loss")["config_id"])[:limit]
    for cid in ranked["config_id"]:
        if len(chosen) >= limit:
            break
        if cid not in chosen:
            chosen.append(cid)
    order = list(ranked["config_id"])
    return sorted(chosen, key=order.index)


def load_histories(sweep_dir: Path, tracking_uri: str | None = None, experiment: str | None = None) -> pd.DataFrame:
    """Returns one row per (config_id, fold, epoch) with the validation metrics of that epoch.

    Read from the Ray Tune trial folders (``progress.csv``, else ``result.json``); when there are
    none and a tracking URI is given, from the metric history of the MLflow fold runs.
    """
    frames = []
    tune_dir = SweepPaths.at(sweep_dir).tune_dir
    for params_file in sorted(tune_dir.glob("*/params.json")) if tune_dir.is_dir() else []:
        folder = params_file.parent
        config = TrialConfig.from_dict(json.loads(params_file.read_text()))
        frame = _read_trial_history(folder)
        if frame is None or frame.empty or "epoch" not in frame:
            continue
        keep = [c for c in frame.columns if c in HISTORY_COLUMNS or c.startswith("dice.")]
        frames.append(frame[keep].assign(**{CONFIG_ID: config.config_id, FOLD: config.fold, LOSS: config.loss}))
    if not frames and tracking_uri and experiment:
        frames = _mlflow_histories(tracking_uri, experiment)
    if not frames:
        return pd.DataFrame(columns=[CONFIG_ID, FOLD, "epoch"])
    history = pd.concat(frames, ignore_index=True)
    # a trial restored into a new folder repeats epochs: keep the last report of each epoch
    return (
        history.drop_duplicates([CONFIG_ID, FOLD, "epoch"], keep="last")
        .sort_values([CONFIG_ID, FOLD, "epoch"])
        .reset_index(drop=True)
    )


def _read_trial_history(folder: Path) -> pd.DataFrame | None:
    progress = folder / "progress.csv"
    if progress.is_file() and progress.stat().st_size:
        try:
            return pd.read_csv(progress)
        except (ValueError, pd.errors.ParserError):
            pass
    result = folder / "result.json"
    if result.is_file():
        rows = []
        for line in result.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            row.pop("config", None)
            rows.append(row)
        return pd.DataFrame(rows)
    return None


def _mlflow_histories(tracking_uri: str, experiment: str) -> list[pd.DataFrame]:
    from mlflow import MlflowClient

    from sweeper.tracking import CONFIG_TAG, FOLD_LEVEL, FOLD_TAG, LEVEL_TAG

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    frames = []
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{LEVEL_TAG}` = '{FOLD_LEVEL}'", max_results=5000
    )
    for run in runs:
        per_epoch: dict[int, dict[str, float]] = {}
        for key in ("dice", "sensitivity", "precision", "val_loss"):
            for m in client.get_metric_history(run.info.run_id, key):
                per_epoch.setdefault(int(m.step), {})[key] = m.value
        if per_epoch:
            frame = pd.DataFrame([{"epoch": e, **v} for e, v in sorted(per_epoch.items())])
            frames.append(
                frame.assign(
                    **{
                        CONFIG_ID: run.data.tags.get(CONFIG_TAG),
                        FOLD: int(run.data.tags.get(FOLD_TAG, 0)),
                        LOSS: run.data.params.get("loss"),
                    }
                )
            )
    return frames


def _store_exists(uri: str) -> bool:
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


# -- figures -------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_colours(losses) -> dict[str, Any]:
    """Returns loss -> colour, stable for a given set of losses (sorted names on tab10)."""
    plt = _plt()
    palette = plt.get_cmap("tab10").colors
    return {loss: palette[i % len(palette)] for i, loss in enumerate(sorted(set(losses)))}


def plot_curves(
    histories: pd.DataFrame, scored: pd.DataFrame, featured: list[str], labels: dict[str, str], path: Path
) -> Figure:
    """Fig. 4: validation Dice per epoch, mean over folds (band: fold min-max), one line per configuration."""
    plt = _plt()
    colours = loss_colours(scored["loss"])
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    styles = ["-", "--", ":", "-."]
    seen_per_loss: dict[str, int] = {}
    for cid in featured:
        curve = histories[histories["config_id"] == cid].groupby("epoch")["dice"]
        if not len(curve):
            continue
        mean, low, high = curve.mean(), curve.min(), curve.max()
        loss = scored.loc[scored["config_id"] == cid, "loss"].iloc[0]
        style = styles[seen_per_loss.get(loss, 0) % len(styles)]
        seen_per_loss[loss] = seen_per_loss.get(loss, 0) + 1
        ax.plot(mean.index, mean.values, style, marker="o", ms=3, color=colours[loss], label=labels[cid])
        ax.fill_between(mean.index, low.values, high.values, color=colours[loss], alpha=0.12)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation dice (mean over folds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    shown = (
        "every configuration"
        if len(featured) == len(scored)
        else (f"{len(featured)} of {len(scored)} configurations (each loss's best, then the next best by dice)")
    )
    return Figure(
        "fig4",
        path,
        "Figure 4. Validation Dice per epoch",
        f"Mean over folds with the fold range shaded; colour = loss, line style tells configurations of "
        f"the same loss apart; {shown}.",
    )


def plot_overall_dice(scored: pd.DataFrame, labels: dict[str, str], path: Path) -> Figure:
    """Fig. 5: overall Dice (fold mean) per configuration, error bars = fold standard deviation."""
    plt = _plt()
    colours = loss_colours(scored["loss"])
    table = scored.sort_values("dice", kind="stable")
    height = max(2.6, 0.32 * len(table) + 1.2)
    fig, ax = plt.subplots(figsize=(7.5, height), dpi=120)
    y = np.arange(len(table))
    std = table["dice_std"].fillna(0.0)
    ax.barh(y, table["dice"], xerr=std, color=[colours[name] for name in table["loss"]], capsize=3, alpha=0.9)
    for yi, value, spread in zip(y, table["dice"], std):
        ax.text(value + spread, yi, f"  {value:.4f}", va="center", ha="left", fontsize=7)
    ax.set_yticks(y, [labels[c] for c in table["config_id"]], fontsize=7)
    low, high = float((table["dice"] - std).min()), float((table["dice"] + std).max())
    ax.set_xlim(max(0.0, low - 0.05), min(1.0, high) + 0.1)
    ax.set_xlabel("overall validation dice (fold mean +- std)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Figure(
        "fig5",
        path,
        "Figure 5. Overall validation Dice per configuration",
        "Fold mean, error bar one fold standard deviation (none with a single fold); colour = loss.",
    )


def plot_organ_bars(
    scored: pd.DataFrame, featured: list[str], labels: dict[str, str], classes: list[str], path: Path
) -> Figure:
    """Fig. 6: per-organ Dice grouped by organ, one bar per configuration (fold std as error bar)."""
    plt = _plt()
    table = scored.set_index("config_id").loc[featured]
    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=120)
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(classes))
    colours = loss_colours(scored["loss"])
    hatches = ["", "//", "..", "xx", "\\\\"]
    seen_per_loss: dict[str, int] = {}
    for i, (cid, row) in enumerate(table.iterrows()):
        values = [row[f"dice.{c}"] for c in classes]
        errors = [0.0 if pd.isna(row.get(f"dice.{c}_std")) else row[f"dice.{c}_std"] for c in classes]
        nth = seen_per_loss.get(row["loss"], 0)
        seen_per_loss[row["loss"]] = nth + 1
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            values,
            width,
            yerr=errors,
            capsize=2,
            color=colours[row["loss"]],
            hatch=hatches[nth % len(hatches)],
            edgecolor="white",
            linewidth=0.5,
            label=labels[cid],
        )
    ax.set_xticks(x, [c.replace("_", " ") for c in classes])
    ax.set_ylabel("validation dice (fold mean)")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Figure(
        "fig6",
        path,
        "Figure 6. Per-organ validation Dice grouped by organ",
        "Fold mean, error bar one fold standard deviation; colour = loss, hatching tells configurations of "
        "the same loss apart"
        + (
            "."
            if len(featured) == len(scored)
            else f"; {len(featured)} of {len(scored)} configurations (each loss's best, then the next best by dice)."
        ),
    )


def plot_organ_heatmap(scored: pd.DataFrame, labels: dict[str, str], classes: list[str], path: Path) -> Figure:
    """Fig. 7: per-organ Dice of every configuration as an annotated heatmap (rows ordered by overall dice)."""
    plt = _plt()
    table = scored.sort_values("dice", ascending=False, kind="stable")
    values = table[[f"dice.{c}" for c in classes]].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(7.5, max(2.4, 0.34 * len(table) + 1.3)), dpi=120)
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    finite = values[np.isfinite(values)]
    middle = float(finite.mean()) if finite.size else 0.5
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(
                j, i, f"{value:.4f}", ha="center", va="center", fontsize=7, color="black" if value > middle else "white"
            )
    ax.set_xticks(range(len(classes)), [c.replace("_", " ") for c in classes])
    ax.set_yticks(range(len(table)), [labels[c] for c in table["config_id"]], fontsize=7)
    fig.colorbar(image, ax=ax, label="dice")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Figure(
        "fig7", path, "Figure 7. Per-organ Dice of every configuration", "Fold means; rows ordered by overall dice."
    )


class QualitativeUnavailable(RuntimeError):
    """The qualitative figure cannot be drawn (no checkpoint, no cache); the message says why."""


#: beside the qualitative figure: the slices it shows, with the dice the report computed for each
QUALITATIVE_SLICES_FILE = "fig9_qualitative_slices.csv"


def find_best_weights(sweep_dir: Path, config_id: str) -> tuple[int, Path, TrialConfig]:
    """Returns (fold, best_model.pt path, trial settings) of the lowest fold of ``config_id`` with saved weights.

    The settings are the trial's own (its Tune ``params.json`` as a ``TrialConfig``): the classes,
    activation, context and threshold it trained and was scored with.
    """
    tune_dir = SweepPaths.at(sweep_dir).tune_dir
    candidates = []
    for params_file in tune_dir.glob("*/params.json"):
        cfg = TrialConfig.from_dict(json.loads(params_file.read_text()))
        if cfg.config_id != config_id:
            continue
        weights = sorted(params_file.parent.glob(f"checkpoint_*/{BEST_WEIGHTS_FILE}"))
        if weights:
            candidates.append((cfg.fold, weights[-1], cfg))
    if not candidates:
        raise QualitativeUnavailable(
            f"no {BEST_WEIGHTS_FILE} of configuration {config_id} under {tune_dir}/*/checkpoint_*"
        )
    return min(candidates, key=lambda c: c[0])


def trial_cache_dir(sweep_dir: Path, cfg: TrialConfig) -> Path:
    """Returns the prepared cache to read a trial's slices from: the sweep's own ``cache/``, else the
    folder the trial read (``cfg.cache_dir``, e.g. a copy on a worker node).

    Raises:
        QualitativeUnavailable: neither holds a prepared cache.
    """
    own = SweepPaths.at(sweep_dir).cache
    for folder in (own, Path(cfg.cache_dir)):
        if (folder / "index.parquet").is_file():
            return folder
    raise QualitativeUnavailable(f"no prepared cache at {own} or {cfg.cache_dir}")


def predict_best_fold(sweep_dir: Path, config_id: str, max_slices: int):
    """Returns (fold, weights path, trial settings, predictions) of ``config_id``'s lowest fold with weights.

    Predicts through the trial's own code (:mod:`trainables.inference`): its network and weights, its
    validation slices and context, its activation, its metrics' prediction and per-slice dice. The
    slices are the fold's validation slices showing an organ (all of them when none does), evenly
    thinned to ``max_slices``, predicted on the CPU.
    """
    from trainables.inference import load_network, predict_slices, validation_slices

    fold, weights, cfg = find_best_weights(sweep_dir, config_id)
    dataset = validation_slices(cfg, trial_cache_dir(sweep_dir, cfg))
    try:
        model = load_network(cfg, weights)
    except RuntimeError as err:  # weights of another network (e.g. a folder edited by hand)
        reason = str(err).strip().splitlines()[0]
        raise QualitativeUnavailable(
            f"{weights} does not fit the trial's network {cfg.arch}/{cfg.encoder} with "
            f"{len(cfg.classes)} output channels: {reason}"
        ) from err
    has_organ = dataset.index[[f"has_{c}" for c in cfg.foreground_classes]].any(axis=1).to_numpy()
    chosen = np.flatnonzero(has_organ) if has_organ.any() else np.arange(len(dataset))
    if len(chosen) > max_slices:
        chosen = chosen[np.linspace(0, len(chosen) - 1, max_slices).round().astype(int)]
    return fold, weights, cfg, predict_slices(cfg, model, dataset, chosen)


def pick_slices(dice: np.ndarray, n_typical: int = 3, n_hardest: int = 3) -> tuple[list[int], list[int]]:
    """Returns (typical, hardest) positions: slices nearest the median dice, and the lowest-dice slices."""
    order = np.argsort(dice, kind="stable")
    hardest = [int(i) for i in order[:n_hardest]]
    rest = np.array([i for i in range(len(dice)) if i not in hardest], dtype=int)
    if not len(rest):
        return [], hardest
    median = np.median(dice)
    typical = rest[np.argsort(np.abs(dice[rest] - median), kind="stable")[:n_typical]]
    return sorted(int(i) for i in typical), hardest


def organ_colour(name: str, k: int) -> tuple[float, float, float]:
    """Returns the overlay colour of organ ``name``, the ``k``-th organ channel drawn."""
    return ORGAN_COLOURS.get(name, FALLBACK_COLOURS[k % len(FALLBACK_COLOURS)])


def _overlay(image: np.ndarray, masks: np.ndarray, organs: list[str]) -> np.ndarray:
    """Returns the slice as RGB with each organ's mask tinted in its colour; ``masks`` holds the organ
    channels only (no softmax background), one per name of ``organs``, and may overlap (multi-label)."""
    span = float(image.max() - image.min())
    grey = (image - image.min()) / span if span > 0 else np.zeros_like(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for k, (name, m) in enumerate(zip(organs, masks)):
        rgb[m] = 0.45 * rgb[m] + 0.55 * np.array(organ_colour(name, k))
    return rgb


def slices_table(predictions, picks: list[tuple[str, int]], config_id: str, fold: int) -> pd.DataFrame:
    """Returns one row per shown slice: the fold trial predicting it (config_id, fold), kind (typical /
    hardest), slice id, scan, position, the slice's dice and its dice per reported class."""
    rows = []
    for kind, i in picks:
        row = predictions.rows.iloc[i]
        rows.append(
            {
                "config_id": config_id,
                "fold": fold,
                "kind": kind,
                "id": row["id"],
                "scan": row["scan"],
                "position": int(row["position"]),
                "dice": float(predictions.slice_dice[i]),
                **{f"dice.{c}": float(v) for c, v in zip(predictions.classes, predictions.dice[i])},
            }
        )
    return pd.DataFrame(rows)


def plot_qualitative(
    sweep_dir: Path,
    scored: pd.DataFrame,
    trials: pd.DataFrame,
    spec: SweepSpec | None,
    classes: list[str],
    path: Path,
    max_slices: int = 256,
) -> Figure:
    """Fig. 9: best configuration's prediction vs ground truth on typical and on the hardest validation slices.

    The slices shown are also written beside the figure (:data:`QUALITATIVE_SLICES_FILE`).
    """
    from trainables.inference import organ_channels

    best = scored.iloc[0]
    fold, weights, cfg, predictions = predict_best_fold(sweep_dir, best["config_id"], max_slices)
    dice = predictions.slice_dice
    typical, hardest = pick_slices(dice)
    picks = [("typical", i) for i in typical] + [("hardest", i) for i in hardest]
    slices_table(predictions, picks, best["config_id"], fold).to_csv(path.parent / QUALITATIVE_SLICES_FILE, index=False)
    organs, channels = list(cfg.foreground_classes), organ_channels(cfg)
    plt = _plt()
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(3, len(picks), figsize=(1.9 * len(picks) + 0.6, 6.6), dpi=120, squeeze=False)
    for col, (kind, i) in enumerate(picks):
        image = predictions.images[i]
        panels = [
            np.repeat(((image - image.min()) / max(float(np.ptp(image)), 1e-6))[..., None], 3, axis=2),
            _overlay(image, predictions.truth[i][channels], organs),
            _overlay(image, predictions.pred[i][channels], organs),
        ]
        for row, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(f"{kind}\n{predictions.rows['id'].iloc[i]}\ndice {dice[i]:.3f}", fontsize=7)
    for row, name in enumerate(("image", "ground truth", "prediction")):
        axes[row, 0].set_ylabel(name, fontsize=9)
    handles = [Patch(color=organ_colour(c, k), label=c.replace("_", " ")) for k, c in enumerate(organs)]
    fig.legend(handles=handles, loc="lower center", ncol=len(organs), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    label = f"{best['loss']} {best['config_id']}"
    rule = (
        "the one-hot argmax of the softmax"
        if cfg.activation == "softmax"
        else f"sigmoid >= {cfg.threshold:g} per organ"
    )
    return Figure(
        "fig9",
        path,
        f"Figure 9. Qualitative results of the best configuration ({label})",
        f"Fold {fold} validation slices, predicted on CPU from the fold's best epoch "
        f"({weights.parent.name}/{weights.name}) with the trial's network and activation (prediction: "
        f"{rule}); {len(dice)} slices showing an organ scored, median per-slice dice "
        f"{np.nanmedian(dice):.3f}. Left: slices nearest the median; right: the lowest per-slice dice "
        f"(the trial's per-image dice, mean over {', '.join(predictions.classes)}; an organ absent in "
        f"truth and prediction scores 1). The shown slices are listed in {QUALITATIVE_SLICES_FILE}.",
    )


# -- HTML ----------------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#555;font-size:.92em}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.84em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f5f8}td.l,th.l{text-align:left}tr.best td{background:#eef7ee;font-weight:600}
tr.failed td{color:#a33}tr.infeasible td{color:#777;font-style:italic}figure{margin:1em 0 2em}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.88em;color:#444;margin-top:.3em}.note{background:#fff7e0;border-left:3px solid #e0b000;
padding:.4em .8em;font-size:.9em}code{background:#f4f4f4;padding:0 3px}.sig{color:#1a7f1a;font-weight:600}
nav a{margin-right:1em;font-size:.9em}.wide{overflow-x:auto;max-width:100%}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _pm(mean: float, std: float | None) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    return f"{mean:.4f}" if std is None or pd.isna(std) else f"{mean:.4f} &plusmn; {std:.4f}"


def _table(header: list[str], rows: list[list[str]], left: int = 1, classes: list[str] | None = None) -> str:
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _organ(name: str) -> str:
    return html.escape(name.replace("_", " ").capitalize())


def render_html(
    *,
    name: str,
    sweep_dir: Path,
    spec: SweepSpec | None,
    trials: pd.DataFrame,
    configs: pd.DataFrame,
    scored: pd.DataFrame,
    labels: dict[str, str],
    classes: list[str],
    figures: list[Figure],
    notes: dict[str, str],
    evidence=None,
    reach: pd.DataFrame | None = None,
) -> str:
    """Returns the report page (a full HTML document, no external references).

    ``evidence``: the patient-level evidence (:class:`sweeper.report_evidence.Evidence`) or the
    sentence saying why there is none (None: the section is left out). ``reach``: how far each
    configuration got (:func:`sweeper.leaderboard.configuration_reach`; None: the section is left out).
    """
    esc = html.escape
    figs = {f.key: f for f in figures}
    best_id = scored["config_id"].iloc[0] if len(scored) else None
    row_class = [
        "best" if c == best_id else ("failed" if n == 0 else "")
        for c, n in zip(configs["config_id"], configs["n_folds"])
    ]

    def figure(key: str) -> str:
        if key in figs:
            f = figs[key]
            return (
                f'<figure id="{key}">{_img(f.path)}<figcaption><b>{esc(f.title)}.</b> {esc(f.caption)}'
                f"</figcaption></figure>"
            )
        return f'<p class="note">{esc(notes.get(key, "Not available for this sweep."))}</p>' if key in notes else ""

    def ident(row) -> list[str]:
        return [
            esc(labels[row["config_id"]]),
            str(int(row["n_folds"]))
            + (f' <span style="color:#a33">({int(row["n_failed"])} failed)</span>' if row["n_failed"] else ""),
        ]

    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Sweep report: {esc(name)}</title>"
        f"<style>{CSS}</style></head><body>"
    ]
    parts.append(f"<h1>Sweep report: {esc(name)}</h1>")
    n_finished = int((trials["status"] == FINISHED).sum())
    n_failed = int((trials["status"] == FAILED).sum())
    meta = [
        f"folder <code>{esc(str(sweep_dir))}</code>",
        f"written {time.strftime('%Y-%m-%d %H:%M')}",
        f"{len(configs)} configurations, {n_finished} finished and {n_failed} failed fold trials",
    ]
    if spec:
        meta.append(
            f"models {esc(', '.join(f'{a}/{e}' for a, e in spec.model.pairs()))} "
            f"({esc(', '.join(spec.model.heads))}); "
            f"losses {esc(', '.join(loss.name for loss in spec.losses))}; {spec.search.mode} search"
            + (f" (budget {spec.search.budget}, {spec.search.sampler})" if spec.search.mode == "optuna" else "")
        )
        meta.append(
            f"folds {spec.data.folds_to_run} of {spec.data.folds} (patient-grouped); {spec.training.epochs} "
            f"epochs; image {spec.data.image_size}px, 2.5D context {spec.data.context}; best epoch by "
            f"validation {esc(spec.training.select_metric)}"
        )
    parts.append("<p class='meta'>" + "<br>".join(meta) + "</p>")
    parts.append(
        "<nav><a href='#overall'>Overall</a><a href='#organs'>Per organ</a><a href='#tradeoff'>"
        "Sensitivity-precision</a><a href='#qualitative'>Qualitative</a><a href='#evidence'>Patient-level "
        "evidence</a>" + ("<a href='#reach'>Reach</a>" if reach is not None else "") + "<a href='#stats'>Fold "
        "statistics</a></nav>"
    )
    if best_id is not None:
        b = scored.iloc[0]
        parts.append(
            f"<p>Best configuration by fold-mean dice: <b>{esc(labels[best_id])}</b> "
            f"({esc(b['arch'])}/{esc(b['encoder'])}), dice {_pm(b['dice'], b.get('dice_std'))} over "
            f"{int(b['n_folds'])} fold(s).</p>"
        )

    # overall
    parts.append("<h2 id='overall'>Overall comparison</h2>")
    metrics = [m for m in OVERALL_METRICS if m in configs]
    rows = [ident(r) + [_pm(r[m], r.get(f"{m}_std")) for m in metrics] for _, r in configs.iterrows()]
    parts.append(
        "<p><b>Table 1.</b> Overall validation performance per configuration (mean over organs, then "
        "fold mean &plusmn; fold std), ordered by dice; best row highlighted.</p>"
    )
    parts.append(_table(["configuration", "folds"] + metrics, rows, left=1, classes=row_class))
    parts += [figure("fig4"), figure("fig5")]

    # per organ
    parts.append("<h2 id='organs'>Per-organ performance</h2>")
    if all(f"dice.{c}" in configs for c in classes):
        rows = [
            ident(r)[:1] + [_pm(r[f"dice.{c}"], r.get(f"dice.{c}_std")) for c in classes] for _, r in configs.iterrows()
        ]
        parts.append("<p><b>Table 2.</b> Per-organ validation dice per configuration (fold mean &plusmn; std).</p>")
        parts.append(_table(["configuration"] + [_organ(c) for c in classes], rows, classes=row_class))
    if all(f"{m}.{c}" in configs for m in ("sensitivity", "precision") for c in classes):
        header = ["configuration"] + [f"{_organ(c)}<br>{m}" for c in classes for m in ("sensitivity", "precision")]
        rows = [
            ident(r)[:1]
            + [_pm(r[f"{m}.{c}"], r.get(f"{m}.{c}_std")) for c in classes for m in ("sensitivity", "precision")]
            for _, r in configs.iterrows()
        ]
        parts.append(
            "<p><b>Table 3.</b> Per-organ sensitivity and precision per configuration (fold mean &plusmn; std).</p>"
        )
        parts.append(_table(header, rows, classes=row_class))
    if best_id is not None:
        b = scored.iloc[0]
        full = [m for m in OVERALL_METRICS if all(f"{m}.{c}" in configs for c in classes)]
        rows = [[_organ(c)] + [_pm(b[f"{m}.{c}"], b.get(f"{m}.{c}_std")) for m in full] for c in classes]
        rows.append(["<b>Overall</b>"] + [_pm(b[m], b.get(f"{m}_std")) for m in full])
        parts.append(
            f"<p><b>Table 4.</b> Full per-organ and overall metrics of the best configuration "
            f"({esc(labels[best_id])}).</p>"
        )
        parts.append(_table(["class"] + full, rows))
    parts += [figure("fig6"), figure("fig7")]

    # trade-off
    parts.append("<h2 id='tradeoff'>Sensitivity-precision trade-off</h2>")
    if {"sensitivity", "precision"} <= set(scored.columns) and len(scored):
        table = pareto_table(scored)
        rows, marks = [], []
        for _, r in table.iterrows():
            status = {FRONT: "on the front", WITHIN_NOISE: "dominated within fold noise"}.get(
                r["front_status"], "dominated"
            )
            rows.append(
                [
                    esc(labels[r["config_id"]]),
                    status,
                    _pm(r["sensitivity"], r.get("sensitivity_std")),
                    _pm(r["precision"], r.get("precision_std")),
                    _pm(r.get("dice"), None),
                ]
            )
            marks.append("best" if r["front_status"] == FRONT else "")
        parts.append(
            "<p><b>Pareto front.</b> Configurations on fold-mean sensitivity vs precision (front rows "
            "highlighted). <i>Dominated within fold noise</i>: behind the front on the means, but the "
            "upper corner of its 95% fold interval is not.</p>"
        )
        parts.append(_table(["configuration", "status", "sensitivity", "precision", "dice"], rows, classes=marks))
    parts.append(figure("fig8"))

    parts.append("<h2 id='qualitative'>Qualitative results</h2>")
    parts.append(figure("fig9"))

    if evidence is not None:
        from sweeper.report_evidence import evidence_section

        parts.append(evidence_section(evidence, labels, classes, figure))
    if reach is not None:
        from sweeper.report_reach import reach_section

        parts.append(reach_section(reach, labels, figure))

    parts.append("<h2 id='stats'>Fold statistics</h2>")
    parts.append(_stats_section(configs, trials, labels, best_id))
    failed = trials[trials["status"] == FAILED]
    if len(failed):
        rows = [
            [
                esc(labels.get(r["config_id"], r["config_id"])),
                str(int(r["fold"])),
                esc((str(r.get("error") or "").strip().splitlines() or ["?"])[-1][:160]),
            ]
            for _, r in failed.iterrows()
        ]
        parts.append("<h2>Failed fold trials</h2>")
        parts.append(_table(["configuration", "fold", "last line of the error"], rows, left=3))
    parts.append(
        "<p class='meta'>Written by <code>sweeper report</code>. Metrics are per-slice with unit "
        "smoothing, averaged over validation slices per organ, overall = mean over organs; each "
        "fold trial is scored at its best epoch.</p></body></html>"
    )
    return "\n".join(p for p in parts if p)


def _stats_section(configs: pd.DataFrame, trials: pd.DataFrame, labels: dict[str, str], best_id: str | None) -> str:
    from sweeper.report_evidence import METHOD_SHORT

    esc = html.escape
    out = []
    shown = [m for m in ("dice", "sensitivity", "precision") if f"{m}_ci_low" in configs]

    def interval(r, m):
        low, high = r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high")
        if low is None or pd.isna(low):
            return f"{r[m]:.4f} (one fold)" if not pd.isna(r[m]) else "-"
        return f"{r[m]:.4f} [{max(low, 0.0):.4f}, {min(high, 1.0):.4f}]"

    # a leaderboard that says which interval each row holds (patient bootstrap or fold fallback) gets it named
    methods = configs["interval_method"] if "interval_method" in configs else None
    rows = [
        [esc(labels[r["config_id"]]), str(int(r["n_folds"])), str(int(r["n_failed"]))]
        + ([] if methods is None else [esc(METHOD_SHORT.get(r["interval_method"], str(r["interval_method"])))])
        + [interval(r, m) for m in shown]
        for _, r in configs.iterrows()
    ]
    named = set() if methods is None else set(methods.dropna())
    if not named:
        caption = "<b>95% intervals over folds</b> (Student t on the fold values"
    elif named == {"fold_corrected_t"}:
        caption = (
            "<b>95% intervals over folds</b> (Nadeau-Bengio corrected t on the fold values: fold results "
            "share training data, so the plain Student t is too narrow"
        )
    else:
        caption = (
            "<b>95% intervals of the leaderboard</b> (per row: <i>patients</i>, the bootstrap over patients "
            "of the out-of-fold case records, or <i>folds, corrected t</i>, the Nadeau-Bengio corrected t on "
            "the fold values where the records miss a finished fold"
        )
    out.append(
        f"<p>{caption}, shown clipped to the metric's range [0, 1]; undefined with one fold). With few folds "
        "the fold intervals are wide: differences inside them are not evidence.</p>"
    )
    out.append(
        _table(
            ["configuration", "folds", "failed"]
            + ([] if methods is None else ["interval"])
            + [f"{m} [95% interval]" for m in shown],
            rows,
            classes=["best" if c == best_id else "" for c in configs["config_id"]],
        )
    )
    if best_id is None:
        return "\n".join(out)
    rows = []
    metrics = [m for m in ("dice", "sensitivity", "precision") if m in trials]
    for other in configs["config_id"]:
        if other == best_id:
            continue
        try:
            comparison = compare_configs(trials, best_id, other, metrics)
        except ValueError:
            done = trials[trials["status"] == FINISHED]
            common = set(done.loc[done["config_id"] == best_id, "fold"]) & set(
                done.loc[done["config_id"] == other, "fold"]
            )
            rows.append(
                [esc(labels[other])]
                + [f"<i>{len(common)} common finished fold(s): no paired test</i>"]
                + [""] * (len(metrics) - 1)
            )
            continue
        cells = []
        for _, c in comparison.iterrows():
            sig = not pd.isna(c["p_value"]) and c["p_value"] < 0.05
            text = f"{c['mean_difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] p={c['p_value']:.3f}"
            cells.append(f"<span class='sig'>{text}</span>" if sig else text)
        rows.append([esc(labels[other]) + f" ({int(comparison['n_folds'].iloc[0])} folds)"] + cells)
    out.append(
        f"<p><b>Paired comparison</b> of the best configuration ({esc(labels[best_id])}) with each other one on "
        "the folds both finished: mean difference best &minus; other, 95% t-interval, paired t-test p "
        "(green: p &lt; 0.05). A positive difference means the best configuration is higher.</p>"
    )
    out.append(_table(["other configuration"] + metrics, rows))
    return "\n".join(out)


# -- MLflow ----------------------------------------------------------------------------------------------
def log_report(report_dir: Path, tracking_uri: str, experiment: str) -> str | None:
    """Logs ``report_dir`` as artifact path ``report/`` of the sweep's MLflow run; returns its run id.

    Returns None (with a warning) when the store, the experiment or the sweep run is missing: a
    report of a copied sweep folder must not fail for want of its MLflow store.
    """
    from sweeper.tracking import LEVEL_TAG, SWEEP_LEVEL

    if not _store_exists(tracking_uri):
        log.warning("MLflow store %s not found; the report is not logged to MLflow", tracking_uri)
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = (
        []
        if exp is None
        else client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`{LEVEL_TAG}` = '{SWEEP_LEVEL}'", max_results=1
        )
    )
    if not runs:
        log.warning("no sweep run of experiment %r in %s; the report is not logged to MLflow", experiment, tracking_uri)
        return None
    run_id = runs[0].info.run_id
    client.log_artifacts(run_id, str(report_dir), artifact_path=REPORT_DIR)
    return run_id
