"""The report's patient-level evidence: figures and tables from the sweep's out-of-fold case records.

:func:`load_evidence` finds the case records (``leaderboard/cases.parquet``, restored from the fold
trials' checkpoints or MLflow runs the way the driver does when some are missing), and
computes every table from one set of patient resamples (:func:`sweeper.evidence.report_tables`).
The plot functions draw them; :func:`evidence_section` writes the HTML section. What each statistic
is and resamples is in :mod:`sweeper.evidence` and the README ("Statistics"):

- threshold curves: out-of-fold sensitivity and precision at every grid threshold k / bins, from
  the records' probability histograms (pooled pixel counts), with the average precision;
- precision at matched sensitivity: per target sensitivity the most precise grid threshold that
  reaches it, its precision with the patient-bootstrap interval, and the paired difference to the
  most precise configuration;
- the front: each configuration's probability of being non-dominated on (sensitivity, precision)
  over the patient resamples;
- reliability curves and the expected calibration error;
- rank stability: the bootstrap distribution of each configuration's rank per metric, drawn as
  challengeR's blob plot (Wiesenfarth et al., Methods and open-source toolkit for analyzing and
  visualizing challenge results, Scientific Reports 11, 2021, DOI 10.1038/s41598-021-82017-6).

This module imports matplotlib and scipy only when it draws or computes.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sweeper.cases import cases_present
from sweeper.paths import SweepPaths

if TYPE_CHECKING:
    from sweeper.evidence import EvidenceSettings

log = logging.getLogger(__name__)

#: metrics whose rank distribution and compare-all table the report shows
RANK_METRICS = ("dice", "sensitivity", "precision")
#: metrics of the patient-level interval tables, overall (object metrics only when recorded)
INTERVAL_METRICS = ("dice", "sensitivity", "precision", "object_sensitivity", "object_precision")
#: how each interval method is named in the report
METHOD_NAMES = {
    "patient_bca": "bias-corrected and accelerated (BCa) bootstrap over patients",
    "patient_percentile": "percentile bootstrap over patients",
    "fold_corrected_t": "fold mean with the Nadeau-Bengio corrected t interval (no case records)",
}
#: the interval method in a table cell
METHOD_SHORT = {
    "patient_bca": "patients, BCa",
    "patient_percentile": "patients, percentile",
    "fold_corrected_t": "folds, corrected t",
}
#: the coverage study behind ``min_patients``
COVERAGE_STUDY = (
    "André et al., Some hidden traps of confidence intervals in medical image segmentation: coverage "
    "issues, MICCAI 2025 workshops"
)


@dataclass
class Evidence:
    """What the report shows from the case records.

    ``tables``: :func:`sweeper.evidence.report_tables` of the configurations whose records cover
    all their finished folds (``config_ids``); ``fallback``: the fold-level intervals of the
    configurations without such records; ``source``: where the records came from, in words.
    """

    settings: EvidenceSettings
    config_ids: list[str]
    tables: dict[str, pd.DataFrame]
    fallback: pd.DataFrame
    source: str
    threshold: float = 0.5
    left_out: list[str] = field(default_factory=list)

    @property
    def n_patients(self) -> int:
        """Fewest validated patients over the configurations shown."""
        return int(self.tables["intervals"]["n_patients"].min())

    @property
    def few_patients(self) -> bool:
        return bool(self.tables["intervals"]["few_patients"].any())


# -- inputs --------------------------------------------------------------------------------------------
def gather_cases(
    sweep_dir: str | Path, trials: pd.DataFrame, tracking_uri: str | None = None
) -> tuple[Path | None, str]:
    """Returns (the case records folder, where its records came from) or (None, why there are none).

    When ``leaderboard/cases.parquet`` lacks finished fold trials, they are restored the way the
    driver does (:func:`sweeper.leaderboard.rebuild_sweep_cases`: from the trials' newest checkpoints,
    then, with ``tracking_uri``, from the fold runs' MLflow artifacts; each fold trial once), which
    also refreshes the leaderboard's intervals. Records that cannot be restored (a broken file, a
    sweep folder that cannot be written) are logged and left out.
    """
    from sweeper.leaderboard import rebuild_sweep_cases

    folder = SweepPaths.at(sweep_dir).cases_table
    done = trials[trials["status"] == "finished"] if "status" in trials else trials.iloc[:0]
    finished = {(str(c), int(f)) for c, f in zip(done["config_id"], done["fold"])}
    restored = 0
    if finished - cases_present(folder):
        try:
            result = rebuild_sweep_cases(sweep_dir, tracking_uri, from_mlflow=tracking_uri is not None, force=False)
            restored = result["from_checkpoints"] + result["from_mlflow"]
        except OSError as err:  # the leaderboard cannot be rewritten: the records present are used
            log.warning("case records not restored into %s: %s", folder, err)
    if not cases_present(folder):
        return None, (
            "This sweep has no out-of-fold case records (leaderboard/cases.parquet, cases.parquet in the "
            "trials' checkpoints, or the fold runs' MLflow artifacts): it was run before Sweeper recorded them, "
            "or they are gone. The report shows the fold-level statistics only."
        )
    source = "leaderboard/cases.parquet"
    if restored:
        source += f"; {restored} fold trial(s) restored from their checkpoints or MLflow runs for this report"
    return folder, source


def covered_configs(cases_path: Path, trials: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Returns (configurations whose records cover every finished fold, the other configurations with a
    finished fold)."""
    present = cases_present(cases_path)
    done = trials[trials["status"] == "finished"] if "status" in trials else trials
    covered, rest = [], []
    for cid, group in done.groupby("config_id", sort=True):
        folds = {(str(cid), int(f)) for f in group["fold"]}
        (covered if folds <= present else rest).append(str(cid))
    return covered, rest


def evidence_settings(spec, override=None) -> EvidenceSettings:
    """Returns the :class:`~sweeper.evidence.EvidenceSettings`: ``override``, else the spec's ``evidence``
    section, else the defaults (no spec: a sweep folder without ``spec.yaml``)."""
    from sweeper.evidence import EvidenceSettings

    if override is not None:
        return override
    return spec.evidence if spec is not None else EvidenceSettings()


def load_evidence(
    sweep_dir: str | Path, trials: pd.DataFrame, spec=None, settings=None, tracking_uri: str | None = None
) -> Evidence | str:
    """Returns the report's :class:`Evidence`, or a sentence saying why there is none.

    ``settings``: an :class:`~sweeper.evidence.EvidenceSettings` (default: the spec's ``evidence``
    section, else the defaults); ``tracking_uri``: the MLflow store to restore lost records from
    (:func:`gather_cases`; None: checkpoints only).
    """
    from sweeper.evidence import fold_intervals, load_patient_sums, report_tables

    settings = evidence_settings(spec, settings)
    path, source = gather_cases(sweep_dir, trials, tracking_uri)
    if path is None:
        return source
    covered, left_out = covered_configs(path, trials)
    if not covered:
        return (
            "Case records exist, but no configuration's records cover all its finished folds; the report "
            "shows the fold-level statistics only."
        )
    sums = load_patient_sums(path, config_ids=covered)
    tables = report_tables(sums, settings, keys=RANK_METRICS)
    rest = trials[(trials["status"] == "finished") & ~trials["config_id"].isin(covered)]
    keys = [k for k in INTERVAL_METRICS if k in rest]
    n_folds = spec.data.folds if spec is not None else None
    fallback = (
        fold_intervals(rest, keys, n_folds=n_folds, confidence=settings.confidence) if len(rest) else pd.DataFrame()
    )
    threshold = spec.training.threshold if spec is not None else 0.5
    return Evidence(settings, covered, tables, fallback, source, threshold, left_out)


# -- figures -------------------------------------------------------------------------------------------
def config_colours(config_ids: list[str]) -> dict[str, tuple]:
    """Returns config_id -> colour, one per configuration in the given order (tab10, then tab20)."""
    from sweeper.report import _plt

    plt = _plt()
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("tab20").colors[1::2])
    return {cid: palette[i % len(palette)] for i, cid in enumerate(config_ids)}


def _panels(n: int, width: float = 3.6, height: float = 3.3, max_cols: int = 4):
    from sweeper.report import _plt

    plt = _plt()
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.9), dpi=110, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return plt, fig, axes.ravel()[:n]


def _group_title(group: str) -> str:
    return "overall (mean over classes)" if group == "overall" else group.replace("_", " ")


def _short(label: str) -> str:
    return label if len(label) <= 34 else label[:31] + "..."


def _style_panel(ax, group: str, *, xlim: tuple[float, float], xlabel: str, ylabel: str, legend_loc: str) -> None:
    """Titles one per-group panel of the threshold and reliability figures and gives it their common look."""
    ax.set_title(_group_title(group), fontsize=9)
    ax.set_xlim(*xlim)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc=legend_loc)


def _save_with_legend_below(fig, path: Path, handles, texts) -> None:
    """Adds one legend of the configurations under the panels, saves the figure and closes it."""
    from sweeper.report import _plt

    fig.legend(handles, texts, loc="lower center", ncol=min(3, len(texts)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path)
    _plt().close(fig)


def plot_threshold_curves(evidence: Evidence, shown: list[str], labels: dict[str, str], path: Path):
    """Fig. 10: out-of-fold sensitivity-precision curves over the threshold grid (pooled pixel counts),
    one panel per group, with each configuration's average precision."""
    from sweeper.report import Figure

    curves, summary = evidence.tables["curves"], evidence.tables["curve_summary"]
    groups = list(dict.fromkeys(curves["class"]))
    colours = config_colours(shown)
    plt, fig, axes = _panels(len(groups))
    handles = []
    for ax, group in zip(axes, groups):
        for cid in shown:
            part = curves[(curves["config_id"] == cid) & (curves["class"] == group)]
            ap = summary.loc[(summary["config_id"] == cid) & (summary["class"] == group), "average_precision"]
            (line,) = ax.plot(
                part["pooled_sensitivity"],
                part["pooled_precision"],
                "-",
                marker=".",
                ms=3,
                lw=1.2,
                color=colours[cid],
                label=f"{cid[:6]} AP {float(ap.iloc[0]):.3f}",
            )
            at = part[np.isclose(part["threshold"], evidence.threshold)]
            if len(at):
                ax.plot(at["pooled_sensitivity"], at["pooled_precision"], "o", ms=6, mfc="none", color=colours[cid])
            if group == groups[0]:
                handles.append(line)
        _style_panel(
            ax,
            group,
            xlim=(0, 1.02),
            xlabel="sensitivity (pooled)",
            ylabel="precision (pooled)",
            legend_loc="lower left",
        )
    _save_with_legend_below(fig, path, handles, [_short(labels[c]) for c in shown])
    return Figure(
        "fig10",
        path,
        "Figure 10. Out-of-fold sensitivity-precision curves over the threshold grid",
        f"Shows each configuration's out-of-fold sensitivity and precision of the pooled pixel counts at every "
        f"grid threshold k/{_bins(evidence)} (open circle: the spec's threshold {evidence.threshold:g}), per class and "
        f"overall (mean over classes at one threshold), with the average precision (AP, non-interpolated on the "
        f"grid; overall: mean over classes) in each panel's legend.",
    )


def _bins(evidence: Evidence) -> int:
    return int(evidence.tables["reliability"]["bin"].max()) + 1


def plot_front_probability(evidence: Evidence, labels: dict[str, str], path: Path):
    """Fig. 11: out-of-fold sensitivity vs precision with patient intervals, coloured by the
    probability of being non-dominated, one panel per group."""
    from sweeper.report import Figure

    front, intervals = evidence.tables["front"], evidence.tables["intervals"].set_index("config_id")
    groups = list(dict.fromkeys(front["class"]))
    plt, fig, axes = _panels(len(groups), width=5.0, height=4.0, max_cols=2)
    cmap = plt.get_cmap("viridis")
    for ax, group in zip(axes, groups):
        part = front[front["class"] == group]
        suffix = "" if group == "overall" else f".{group}"
        for _, r in part.iterrows():
            row = intervals.loc[r["config_id"]]
            sx, sy = f"sensitivity{suffix}", f"precision{suffix}"
            xerr = [[r["sensitivity"] - row[f"{sx}_ci_low"]], [row[f"{sx}_ci_high"] - r["sensitivity"]]]
            yerr = [[r["precision"] - row[f"{sy}_ci_low"]], [row[f"{sy}_ci_high"] - r["precision"]]]
            colour = cmap(float(r["front_probability"]))
            ax.errorbar(
                r["sensitivity"],
                r["precision"],
                xerr=np.nan_to_num(np.clip(xerr, 0, None)),
                yerr=np.nan_to_num(np.clip(yerr, 0, None)),
                fmt="o" if r["on_front"] else "s",
                ms=6,
                color=colour,
                mec="black" if r["on_front"] else colour,
                ecolor=(0.6, 0.6, 0.6),
                elinewidth=0.8,
                capsize=2,
            )
            if len(part) > 12 and not r["on_front"] and r["front_probability"] < 0.1:
                continue  # a crowded plot names the configurations that may be on the front only
            ax.annotate(
                f"{r['config_id'][:6]} P={r['front_probability']:.2f}",
                (r["sensitivity"], r["precision"]),
                fontsize=6,
                xytext=(4, 3),
                textcoords="offset points",
            )
        on = part[part["on_front"]].sort_values("sensitivity")
        if len(on):
            xs = np.repeat(on["sensitivity"].to_numpy(), 2)[1:]
            ys = np.repeat(on["precision"].to_numpy(), 2)[:-1]
            ax.plot(xs, ys, "--", color="black", lw=0.8)
        ax.set_title(_group_title(group), fontsize=9)
        ax.set_xlabel("sensitivity (out-of-fold)", fontsize=8)
        ax.set_ylabel("precision (out-of-fold)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.margins(0.15)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(mappable, cax=fig.add_axes((0.9, 0.2, 0.02, 0.6)), label="probability of being non-dominated")
    fig.savefig(path)
    plt.close(fig)
    return Figure(
        "fig11",
        path,
        "Figure 11. The front with each configuration's probability of being non-dominated",
        "Shows the out-of-fold sensitivity and precision of every configuration with their 95% patient-bootstrap "
        "intervals, coloured by the share of patient resamples in which no other configuration is at least as "
        "good on both and better on one (P); circles with a black edge are on the front of the point values "
        "(dashed staircase), squares are dominated.",
    )


def plot_reliability(evidence: Evidence, shown: list[str], labels: dict[str, str], path: Path):
    """Fig. 12: reliability curves (observed foreground share against mean predicted probability per
    bin), one panel per group, with the expected calibration error."""
    from sweeper.report import Figure

    curves, summary = evidence.tables["reliability"], evidence.tables["curve_summary"]
    groups = list(dict.fromkeys(curves["class"]))
    colours = config_colours(shown)
    plt, fig, axes = _panels(len(groups))
    handles = []
    for ax, group in zip(axes, groups):
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
        for cid in shown:
            part = curves[(curves["config_id"] == cid) & (curves["class"] == group) & (curves["pixels"] > 0)]
            ece = summary.loc[(summary["config_id"] == cid) & (summary["class"] == group), "calibration_error"]
            (line,) = ax.plot(
                part["confidence"],
                part["observed"],
                "-",
                marker=".",
                ms=3,
                lw=1.2,
                color=colours[cid],
                label=f"{cid[:6]} ECE {float(ece.iloc[0]):.4f}",
            )
            if group == groups[0]:
                handles.append(line)
        _style_panel(
            ax,
            group,
            xlim=(0, 1),
            xlabel="mean predicted probability",
            ylabel="share of pixels that are foreground",
            legend_loc="upper left",
        )
    _save_with_legend_below(fig, path, handles, [_short(labels[c]) for c in shown])
    return Figure(
        "fig12",
        path,
        "Figure 12. Reliability curves with the expected calibration error",
        f"Shows the share of the out-of-fold pixels that are foreground in each probability bin "
        f"(1/{_bins(evidence)} wide) against their mean predicted probability (dotted: perfect calibration), per "
        "class and over all classes' pixels, with each configuration's expected calibration error (ECE, over all "
        "pixels; overall: mean over classes) in the legend.",
    )


def plot_rank_stability(evidence: Evidence, labels: dict[str, str], path: Path):
    """Fig. 13: blob plot of the bootstrap rank distribution, one panel per metric."""
    from sweeper.report import Figure

    ranks = evidence.tables["ranks"]
    metrics = [m for m in RANK_METRICS if m in set(ranks["metric"])]
    n = len(evidence.config_ids)
    # one panel per row once the configurations would not fit side by side
    wide = n > 10
    plt, fig, axes = _panels(
        len(metrics),
        width=min(max(3.6, 0.3 * n + 1.6), 18.0) if wide else max(3.6, 0.45 * n + 1.6),
        height=max(3.4, 0.12 * n + 1.5),
        max_cols=1 if wide else 4,
    )
    for ax, metric in zip(axes, metrics):
        part = ranks[ranks["metric"] == metric]
        order = part.drop_duplicates("config_id").sort_values(["point_rank", "mean_rank"])["config_id"].tolist()
        x = {cid: i for i, cid in enumerate(order)}
        ax.scatter(
            part["config_id"].map(x), part["rank"], s=400 * part["probability"], color=(0.25, 0.45, 0.75), alpha=0.6
        )
        for cid in order:
            rows = part[part["config_id"] == cid].sort_values("rank")
            cumulative = rows["probability"].cumsum().to_numpy()
            low = rows["rank"].to_numpy()[np.searchsorted(cumulative, 0.025)]
            high = rows["rank"].to_numpy()[min(np.searchsorted(cumulative, 0.975), len(rows) - 1)]
            ax.plot([x[cid], x[cid]], [low, high], color="black", lw=1)
            ax.plot(x[cid], rows["point_rank"].iloc[0], "x", color="black", ms=6)
        ax.set_xticks(range(n), [c[:6] for c in order], rotation=60, fontsize=7)
        ax.set_ylim(n + 0.7, 0.3)
        if n <= 15:
            ax.set_yticks(range(1, n + 1))
        else:
            ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("rank (1 = best)", fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Figure(
        "fig13",
        path,
        "Figure 13. Rank stability over patient resamples",
        "Shows the bootstrap distribution of each configuration's rank per metric (blob area: the share of "
        "patient resamples giving that rank; cross: the rank of the out-of-fold values; line: the 2.5% to 97.5% "
        "quantiles of the rank), configurations ordered by their rank, as challengeR's blob plots.",
    )


def write_figures(evidence: Evidence, featured: list[str], labels: dict[str, str], out: Path) -> list:
    """Returns the evidence figures written into ``out`` (Figs. 10-13)."""
    shown = [c for c in featured if c in evidence.config_ids] or evidence.config_ids[:10]
    return [
        plot_threshold_curves(evidence, shown, labels, out / "fig10_threshold_curves.png"),
        plot_front_probability(evidence, labels, out / "fig11_front_probability.png"),
        plot_reliability(evidence, shown, labels, out / "fig12_reliability.png"),
        plot_rank_stability(evidence, labels, out / "fig13_rank_stability.png"),
    ]


# -- HTML ----------------------------------------------------------------------------------------------
def _ci(value, low, high, digits: int = 4) -> str:
    """``value [low, high]``; ``-`` where the value is undefined."""
    if value is None or pd.isna(value):
        return "-"
    if low is None or pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _signed_ci(value, low, high) -> str:
    if value is None or pd.isna(value):
        return "-"
    text = f"{value:+.4f}"
    return text if pd.isna(low) else f"{text} [{low:+.4f}, {high:+.4f}]"


def method_sentence(settings) -> str:
    """The interval method in words: level, method, resamples."""
    name = METHOD_NAMES[f"patient_{settings.method}"]
    return f"{settings.confidence:.0%} {name}, {settings.resamples} resamples (seed {settings.seed})"


def few_patients_note(evidence: Evidence) -> str:
    """A visible note when fewer patients were validated than the coverage studies support, else ''."""
    if not evidence.few_patients:
        return ""
    return (
        f"<p class='note' id='few-patients'><b>Few patients.</b> {evidence.n_patients} validated patient(s), fewer "
        f"than the {evidence.settings.min_patients} below which the coverage of intervals for a mean can fail "
        f"({html.escape(COVERAGE_STUDY)}): the intervals below may be too narrow; read them as indicative.</p>"
    )


def evidence_section(evidence: Evidence | str, labels: dict[str, str], classes: list[str], figure) -> str:
    """Returns the report's "Patient-level evidence" section; ``figure(key)`` renders a figure by key.

    Without case records (``evidence`` is the reason, a string) the section says so in a note.
    """
    from sweeper.report import _organ
    from sweeper.report import _table as _plain_table

    def _table(*args, **kwargs) -> str:  # wide tables scroll inside the page
        return f"<div class='wide'>{_plain_table(*args, **kwargs)}</div>"

    esc = html.escape
    parts = ["<h2 id='evidence'>Patient-level evidence</h2>"]
    if isinstance(evidence, str):
        parts.append(f"<p class='note' id='no-case-records'>{esc(evidence)}</p>")
        return "\n".join(parts)
    t = evidence.tables
    intervals = t["intervals"].set_index("config_id")
    ids = evidence.config_ids
    label = {cid: esc(labels.get(cid, cid)) for cid in ids}
    parts.append(
        f"<p class='meta'>From the out-of-fold case records ({esc(evidence.source)}) of {len(ids)} configuration(s); "
        f"patients validated per configuration: {int(intervals['n_patients'].min())}"
        + (
            f" to {int(intervals['n_patients'].max())}"
            if intervals["n_patients"].max() != intervals["n_patients"].min()
            else ""
        )
        + f". Intervals: <b id='interval-method'>{esc(method_sentence(evidence.settings))}</b>: the patient is "
        "the resampling unit (each patient's slices travel together) and every table and figure below uses "
        "the same resamples.</p>"
    )
    parts.append(few_patients_note(evidence))
    if evidence.left_out:
        parts.append(
            "<p class='note'>Without case records of every finished fold (fold-level interval in Table 5, left out "
            "of the rest of this section): " + ", ".join(esc(labels.get(c, c)) for c in evidence.left_out) + ".</p>"
        )

    # intervals, overall
    metrics = [m for m in INTERVAL_METRICS if m in intervals and intervals[m].notna().any()]
    rows, marks = [], []
    best = intervals["dice"].idxmax() if intervals["dice"].notna().any() else None
    for cid in ids:
        r = intervals.loc[cid]
        rows.append(
            [label[cid], str(int(r["n_patients"])), str(int(r["n_images"])), METHOD_SHORT[r["interval_method"]]]
            + [_ci(r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"]) for m in metrics]
        )
        marks.append("best" if cid == best else "")
    fallback = evidence.fallback
    for _, r in fallback.iterrows():
        rows.append(
            [esc(labels.get(r["config_id"], r["config_id"])), "-", "-", METHOD_SHORT[r["interval_method"]]]
            + [_ci(r.get(m), r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high")) for m in metrics]
        )
        marks.append("")
    parts.append(
        "<p id='patient-intervals'><b>Table 5.</b> Shows each configuration's out-of-fold value (over every "
        "validated image, overall = mean over classes) with its 95% patient-level interval; the method of each "
        "row is named (rows without case records keep the fold-level corrected t interval).</p>"
    )
    parts.append(
        _table(
            ["configuration", "patients", "images", "interval"] + [f"{m} [95% interval]" for m in metrics],
            rows,
            classes=marks,
        )
    )
    per_class = [c for c in classes if f"dice.{c}" in intervals]
    if per_class:
        rows = [
            [label[cid]]
            + [
                _ci(
                    intervals.loc[cid, f"dice.{c}"],
                    intervals.loc[cid, f"dice.{c}_ci_low"],
                    intervals.loc[cid, f"dice.{c}_ci_high"],
                )
                for c in per_class
            ]
            for cid in ids
        ]
        parts.append(
            "<p><b>Table 6.</b> Shows each configuration's out-of-fold dice per organ with its 95% patient-level "
            "interval.</p>"
        )
        parts.append(_table(["configuration"] + [_organ(c) for c in per_class], rows, classes=marks[: len(ids)]))

    # indistinguishable from the best
    table = t["indistinguishable"]
    if len(table):
        header, rows = ["configuration"], []
        keys = list(dict.fromkeys(table["metric"]))
        header += [f"{k}: rank, Holm p vs best" for k in keys]
        for cid in ids:
            cells = []
            for key in keys:
                row = table[(table["metric"] == key) & (table["config_id"] == cid)]
                if not len(row):
                    cells.append("-")
                    continue
                row = row.iloc[0]
                text = (
                    f"{int(row['rank'])} (best)"
                    if row["best"]
                    else f"{int(row['rank'])}, p={row['p_holm_vs_best']:.3f}"
                    + (" (not distinguishable)" if row["indistinguishable"] else "")
                )
                cells.append(f"<span class='sig'>{text}</span>" if row["indistinguishable"] else text)
            rows.append([label[cid]] + cells)
        parts.append(
            "<p id='indistinguishable'><b>Table 7.</b> Shows each configuration's rank and the Holm-adjusted "
            f"p-value of the paired patient-level test ({esc(evidence.settings.paired_test)}) against the best "
            "configuration; green: not distinguishable from the best at "
            f"alpha {evidence.settings.alpha:.2g}.</p>"
        )
        parts.append(_table(header, rows))

    # threshold curves, AP and ECE
    parts.append("<h3 id='thresholds'>Thresholds and calibration</h3>")
    parts.append(figure("fig10"))
    summary = t["curve_summary"]
    groups = list(dict.fromkeys(summary["class"]))
    rows = []
    for cid in ids:
        mine = summary[summary["config_id"] == cid].set_index("class")
        rows.append(
            [label[cid]]
            + [
                _ci(
                    mine.loc[g, "average_precision"],
                    mine.loc[g, "average_precision_ci_low"],
                    mine.loc[g, "average_precision_ci_high"],
                )
                for g in groups
            ]
        )
    parts.append(
        "<p id='average-precision'><b>Table 8.</b> Shows the average precision of each configuration's pooled "
        "out-of-fold sensitivity-precision curve on the threshold grid, per class and overall (mean over classes), "
        "with its 95% patient-level interval.</p>"
    )
    parts.append(_table(["configuration"] + [_organ(g) for g in groups], rows))
    parts.append(figure("fig12"))
    rows = []
    for cid in ids:
        mine = summary[summary["config_id"] == cid].set_index("class")
        rows.append(
            [label[cid]]
            + [
                _ci(
                    mine.loc[g, "calibration_error"],
                    mine.loc[g, "calibration_error_ci_low"],
                    mine.loc[g, "calibration_error_ci_high"],
                )
                for g in groups
            ]
            + [f"{mine.loc[groups[0], 'calibration_error_bound']:.4f}"]
        )
    parts.append(
        "<p id='calibration-error'><b>Table 9.</b> Shows each configuration's expected calibration error over "
        "all out-of-fold pixels (per class and overall: mean over classes) with its 95% patient-level interval; "
        "the last column bounds how far it can be from the exact-bin-means value.</p>"
    )
    parts.append(_table(["configuration"] + [_organ(g) for g in groups] + ["bound (overall)"], rows))

    # matched sensitivity
    matched = t["matched"]
    matched = matched[matched["curve"] == "per_image"]
    targets = sorted(set(matched["target_sensitivity"]))
    rows = []
    overall = matched[matched["class"] == "overall"]
    for cid in ids:
        cells = []
        for target in targets:
            r = overall[(overall["config_id"] == cid) & np.isclose(overall["target_sensitivity"], target)].iloc[0]
            if pd.isna(r["precision"]):
                cells.append("not reached")
                continue
            difference = (
                "best" if r["best"] else _signed_ci(r["difference"], r["difference_ci_low"], r["difference_ci_high"])
            )
            cells.append(
                f"{_ci(r['precision'], r['precision_ci_low'], r['precision_ci_high'])} at {r['threshold']:g}"
                f"<br>{difference}"
            )
        rows.append([label[cid]] + cells)
    header = ["configuration"] + [
        f"sensitivity &ge; {target:g}: precision [95%] at threshold<br>difference to the best [95%]"
        for target in targets
    ]
    parts.append("<h3 id='matched'>Precision at matched sensitivity</h3>")
    parts.append(
        "<p id='matched-sensitivity'><b>Table 10.</b> Shows each configuration's out-of-fold precision "
        "(per-image means, overall) at the most precise grid threshold whose sensitivity reaches each target, "
        "with its 95% patient-level interval (the threshold is chosen again on every resample), and the paired "
        "difference to the most precise configuration: an interval excluding 0 says the loss changes precision "
        "beyond what moving the threshold does.</p>"
    )
    parts.append(_table(header, rows))
    per_group = [g for g in dict.fromkeys(matched["class"]) if g != "overall"]
    if per_group:
        header = ["configuration"] + [f"{_organ(g)}<br>sens &ge; {s:g}" for g in per_group for s in targets]
        rows = []
        for cid in ids:
            cells = []
            for g in per_group:
                for target in targets:
                    r = matched[
                        (matched["config_id"] == cid)
                        & (matched["class"] == g)
                        & np.isclose(matched["target_sensitivity"], target)
                    ].iloc[0]
                    cells.append(
                        "not reached"
                        if pd.isna(r["precision"])
                        else _ci(r["precision"], r["precision_ci_low"], r["precision_ci_high"])
                    )
            rows.append([label[cid]] + cells)
        parts.append(
            "<p><b>Table 11.</b> Shows the same precision at matched sensitivity per organ (each organ's own "
            "most precise threshold), with its 95% patient-level interval.</p>"
        )
        parts.append(_table(header, rows))

    # front
    parts.append("<h3 id='front'>The front and its uncertainty</h3>")
    parts.append(figure("fig11"))
    front = t["front"]
    groups = list(dict.fromkeys(front["class"]))
    rows, marks = [], []
    for cid in ids:
        mine = front[front["config_id"] == cid].set_index("class")
        r = intervals.loc[cid]
        rows.append(
            [
                label[cid],
                _ci(r["sensitivity"], r["sensitivity_ci_low"], r["sensitivity_ci_high"]),
                _ci(r["precision"], r["precision_ci_low"], r["precision_ci_high"]),
                "yes" if mine.loc["overall", "on_front"] else "no",
            ]
            + [f"{mine.loc[g, 'front_probability']:.3f}" for g in groups]
        )
        marks.append("best" if mine.loc["overall", "on_front"] else "")
    parts.append(
        "<p id='front-probability'><b>Table 12.</b> Shows each configuration's out-of-fold sensitivity and "
        "precision with 95% patient-level intervals, whether it is on the front of the point values, and its "
        "probability of being non-dominated (share of patient resamples), overall and per organ.</p>"
    )
    parts.append(
        _table(
            ["configuration", "sensitivity [95%]", "precision [95%]", "on front"]
            + [f"P(non-dominated)<br>{_organ(g)}" for g in groups],
            rows,
            classes=marks,
        )
    )
    parts.append("<h3 id='ranks'>Rank stability</h3>")
    parts.append(figure("fig13"))
    return "\n".join(p for p in parts if p)
