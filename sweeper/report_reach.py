"""The report's "How far each configuration got" section: Table 13 and Figure 14.

For a sweep that prunes (``search.pruning.folds``, ``scheduler: {type: moasha}``) or constrains
(``search.constraints``), each configuration's reach (:func:`sweeper.leaderboard.configuration_reach`):
how it ended (finished, pruned, failed, still running, infeasible), which pruning left it behind and
where (the rung, the fold and epoch the scheduler stopped it at), the constraint bound an infeasible
one breaks, the folds it ran, the epochs its least-trained fold trial reached, and the share of full
fan-out training (every fold, every epoch) it took. Infeasible configurations finished every fold, so
they are listed apart, after the others. :func:`sweeper.report.write_report` calls
:func:`plot_reach` and :func:`reach_section`.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.leaderboard import (
    BROKEN_CONSTRAINT,
    CONFIG_ID,
    EPOCHS_REACHED,
    EPOCHS_TOTAL,
    FAILED,
    FINISHED,
    FOLDS_RUN,
    FOLDS_TOTAL,
    INFEASIBLE_OUTCOME,
    OUTCOME,
    PRUNED,
    PRUNED_KIND,
    PRUNED_STAGE,
    RUNNING_OUTCOME,
    SHARE_TRAINED,
)

#: the figure's key, file and title (the report's numbering: Figs. 4-13 come before)
FIGURE_KEY, FIGURE_FILE = "fig14", "fig14_configuration_reach.png"
#: bar colour per outcome
OUTCOME_COLOURS = {
    FINISHED: (0.2, 0.6, 0.3),
    PRUNED: (0.95, 0.6, 0.1),
    FAILED: (0.8, 0.2, 0.2),
    RUNNING_OUTCOME: (0.5, 0.6, 0.8),
    INFEASIBLE_OUTCOME: (0.6, 0.6, 0.6),
}
#: ``pruned_kind`` in words
KIND_WORDS = {"fold_halving": "fold halving", "epoch_scheduler": "epoch scheduler"}


def reach_order(reach: pd.DataFrame) -> pd.DataFrame:
    """Returns ``reach`` with the infeasible configurations moved after the others (each part in its order)."""
    infeasible = reach[OUTCOME] == INFEASIBLE_OUTCOME
    return pd.concat([reach[~infeasible], reach[infeasible]], ignore_index=True)


def reach_cells(row: pd.Series) -> list[str]:
    """Returns a reach row's table cells after the configuration: outcome, by which pruning, where (the
    pruned stage, or the bounds an infeasible one breaks), folds ``run/total``, epochs ``reached/total``,
    share of full training in percent."""
    where = row[PRUNED_STAGE] if row[OUTCOME] == PRUNED else row[BROKEN_CONSTRAINT] or ""
    return [
        str(row[OUTCOME]),
        KIND_WORDS.get(row[PRUNED_KIND], row[PRUNED_KIND] or ""),
        str(where),
        f"{int(row[FOLDS_RUN])}/{int(row[FOLDS_TOTAL])}",
        f"{int(row[EPOCHS_REACHED])}/{int(row[EPOCHS_TOTAL])}",
        f"{100 * float(row[SHARE_TRAINED]):.0f}%",
    ]


def plot_reach(reach: pd.DataFrame, labels: dict[str, str], path: Path):
    """Fig. 14: per configuration, the share of full fan-out training it took (bar, coloured by outcome) with
    its folds and epochs reached written beside; infeasible configurations below a dashed line."""
    from sweeper.report import Figure, _plt

    plt = _plt()
    table = reach_order(reach)
    height = max(2.6, 0.32 * len(table) + 1.4)
    fig, ax = plt.subplots(figsize=(7.5, height), dpi=120)
    y = np.arange(len(table))[::-1]  # the first row on top
    shares = table[SHARE_TRAINED].to_numpy(float)
    ax.barh(y, shares, color=[OUTCOME_COLOURS.get(o, (0.5, 0.5, 0.5)) for o in table[OUTCOME]], alpha=0.9)
    for yi, share, (_, row) in zip(y, shares, table.iterrows()):
        text = f"  {int(row[FOLDS_RUN])}/{int(row[FOLDS_TOTAL])} folds, epoch {int(row[EPOCHS_REACHED])}"
        if row[OUTCOME] == PRUNED and row[PRUNED_STAGE]:
            text += f" ({row[PRUNED_STAGE]})"
        ax.text(share, yi, text, va="center", ha="left", fontsize=7)
    n_infeasible = int((table[OUTCOME] == INFEASIBLE_OUTCOME).sum())
    if 0 < n_infeasible < len(table):
        ax.axhline(n_infeasible - 0.5, color="0.4", linestyle="--", linewidth=0.8)
    ax.set_yticks(y, [labels.get(c, c) for c in table[CONFIG_ID]], fontsize=7)
    ax.set_xlim(0.0, 1.6)  # room for the text beside a full bar
    ax.set_xticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("share of full training (fold trial epochs / folds x epochs)")
    present = [o for o in OUTCOME_COLOURS if o in set(table[OUTCOME])]
    handles = [plt.Rectangle((0, 0), 1, 1, color=OUTCOME_COLOURS[o]) for o in present]
    ax.legend(handles, present, fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Figure(
        FIGURE_KEY,
        path,
        "Figure 14. How far each configuration got",
        "Bar: the share of full training (every fold to the last epoch) each configuration took; colour = how "
        "it ended; beside it the folds it ran and the epoch its least-trained fold trial reached, and for a "
        "pruned one the rung it was stopped at. Infeasible configurations (every fold run, a constraint "
        "broken) are below the dashed line.",
    )


def reach_section(reach: pd.DataFrame, labels: dict[str, str], figure: Callable[[str], str]) -> str:
    """Returns the report's "How far each configuration got" section (Table 13, then Figure 14 through
    ``figure``, the report's figure-or-note renderer)."""
    from sweeper.report import _table

    esc = html.escape
    table = reach_order(reach)
    rows = [
        [esc(labels.get(r[CONFIG_ID], r[CONFIG_ID]))] + [esc(c) for c in reach_cells(r)] for _, r in table.iterrows()
    ]
    marks = [
        "failed" if o in (PRUNED, FAILED) else ("infeasible" if o == INFEASIBLE_OUTCOME else "") for o in table[OUTCOME]
    ]
    counts = table[OUTCOME].value_counts()
    summary = ", ".join(f"{int(counts[o])} {o}" for o in OUTCOME_COLOURS if o in counts)
    parts = [
        "<h2 id='reach'>How far each configuration got</h2>",
        f"<p><b>Table 13.</b> How far each configuration got ({esc(summary)}): how it ended, which pruning left "
        "it behind and where (fold halving: the rung and the folds it had run; epoch scheduler: the rung, fold "
        "and epoch it was stopped at), the constraint bound an infeasible one breaks, the folds it ran, the "
        "epochs its least-trained fold trial reached, and its share of full training. Pruned rows are in red: "
        "their means cover fewer folds or epochs and stay off the front; infeasible ones, listed last, ran every "
        "fold but break a constraint.</p>",
        _table(
            ["configuration", "outcome", "pruned by", "where / broken bound", "folds", "epochs", "training"],
            rows,
            left=4,
            classes=marks,
        ),
        figure(FIGURE_KEY),
    ]
    return "\n".join(parts)
