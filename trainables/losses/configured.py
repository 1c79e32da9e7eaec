"""Losses as a sweep names them: one registered loss or a weighted sum, with a flat knob dict.

A sweep configuration stores a loss as ``(name, flat knobs)``:

- ``name`` is a registered loss (``tversky``) or a compound expression (``0.5*focal + 0.5*dice``,
  ``ce + pm_dice``; see :func:`~trainables.losses.compound.parse_compound`);
- the flat knobs are scalars keyed as :func:`~trainables.losses.registry.flat_knob_space` keys them
  (``alpha``, ``gamma.small_bowel``), prefixed by the term's loss name inside a compound
  (``focal.gamma``, ``pm_dice.gamma.stomach``).

:func:`configured_knob_space` gives the searchable space of such a name and
:func:`build_configured_loss` turns ``(name, flat knobs)`` back into an ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from .compound import build_compound, parse_compound
from .registry import LOSSES, Knob, assemble_knobs, build_loss, flat_knob_space

__all__ = ["is_compound", "compound_terms", "configured_knob_space", "build_configured_loss"]


def is_compound(name: str) -> bool:
    """Returns whether ``name`` is a weighted-sum expression rather than one registered loss."""
    return name not in LOSSES and any(ch in name for ch in "+*")


def compound_terms(name: str) -> list[tuple[float, str]]:
    """Returns the (weight, loss) terms of a compound expression; each loss at most once."""
    terms = parse_compound(name)
    names = [term for _, term in terms]
    if len(set(names)) != len(names):
        raise ValueError(f"{name!r} lists a loss twice; merge its weights into one term")
    return terms


def configured_knob_space(name: str, class_names: Sequence[str]) -> dict[str, Knob]:
    """Returns the flat knob space of a registered loss or a compound (keys prefixed ``<loss>.``).

    Raises:
        KeyError: an unknown loss name (inside a compound too).
        ValueError: a malformed compound expression.
    """
    if not is_compound(name):
        if name not in LOSSES:
            raise KeyError(f"unknown loss {name!r}; registered losses: {sorted(LOSSES)}")
        return flat_knob_space(name, class_names)
    return {f"{term}.{key}": knob for _, term in compound_terms(name)
            for key, knob in flat_knob_space(term, class_names).items()}


def build_configured_loss(name: str, flat_knobs: dict[str, float], class_names: Sequence[str],
                          **context: Any) -> nn.Module:
    """Returns the loss module for a sweep configuration.

    Args:
        name: a registered loss or a compound expression.
        flat_knobs: knob values keyed as in :func:`configured_knob_space` (missing ones take defaults).
        class_names: output channels in order (per-class knobs are gathered in this order).
        context: run options passed to every loss (``activation``, ``include_background``,
            ``class_frequencies``, ``foreground_areas``, ``n_classes``); a loss ignores those it does not use.
    """
    if not is_compound(name):
        return build_loss(name, **context, **assemble_knobs(name, flat_knobs, class_names))
    terms = []
    for weight, term in compound_terms(name):
        prefix = term + "."
        own = {k[len(prefix):]: v for k, v in flat_knobs.items() if k.startswith(prefix)}
        terms.append((weight, term, assemble_knobs(term, own, class_names)))
    unknown = [k for k in flat_knobs if not any(k.startswith(t + ".") for _, t in compound_terms(name))]
    if unknown:
        raise ValueError(f"{name!r}: knobs {unknown} belong to no term; prefix each with its loss, e.g. focal.gamma")
    return build_compound(terms, **context)
