"""A picture of a multi-objective search: every evaluation, the infeasible ones, and the Pareto front.

Drawn in the first two objectives (raw values, in their own directions), as NSGA-II papers draw their
fronts (Deb et al., IEEE TEVC 2002, figures 3-9): feasible evaluations as grey dots, evaluations that
violated a constraint as crosses, the front as a staircase of coloured points. With more than two
objectives the front members are those of all objectives, projected onto the first two. Like
:mod:`nasjax.oneshot.plots`, only matplotlib's Agg canvas is used (no pyplot, no global state, no display).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nasjax.errors import NasjaxError


def pareto_figure(records: Sequence[dict], objectives, summary: dict) -> Figure:
  """The figure of a search's ``records`` (each with ``metrics``, ``failed``) and its
  :func:`nasjax.objectives.pareto_summary`."""
  names = objectives.names
  if len(names) < 2:
    raise NasjaxError("a Pareto-front plot needs at least two objectives")
  x_name, y_name = names[0], names[1]
  feasible, infeasible = [], []
  for r in records:
    if r["failed"]:
      continue
    values = objectives.values(r["metrics"])[:2]
    if not np.all(np.isfinite(values)):
      continue
    (feasible if objectives.feasible(r["metrics"]) else infeasible).append(values)
  front = np.asarray([[e["objectives"][x_name], e["objectives"][y_name]] for e in summary["front"]],
                     np.float64).reshape(-1, 2)
  fig = Figure(figsize=(6.0, 4.5), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  if feasible:
    f = np.asarray(feasible)
    ax.scatter(f[:, 0], f[:, 1], s=10, color="#9e9e9e", alpha=0.6, label=f"evaluated ({len(f)})")
  if infeasible:
    g = np.asarray(infeasible)
    ax.scatter(g[:, 0], g[:, 1], s=14, marker="x", color="#e57373", alpha=0.7,
               label=f"infeasible ({len(g)}): " + ", ".join(summary.get("constraints", [])))
  if len(front):
    order = np.argsort(front[:, 0])
    ax.step(front[order, 0], front[order, 1], where="post" if objectives.objectives[1].direction == "max" else "pre",
            color="#1f77b4", linewidth=1.2, alpha=0.8)
    ax.scatter(front[:, 0], front[:, 1], s=28, color="#1f77b4", zorder=3, label=f"Pareto front ({len(front)})")
  arrow = {"max": "higher is better", "min": "lower is better"}
  ax.set_xlabel(f"{x_name} ({arrow[objectives.objectives[0].direction]})")
  ax.set_ylabel(f"{y_name} ({arrow[objectives.objectives[1].direction]})")
  reference = summary.get("reference") or {}
  title = f"hypervolume {summary.get('hypervolume', 0.0):.4g}"
  if reference:
    title += " above (" + ", ".join(f"{k}={v:.4g}" for k, v in reference.items()) + ")"
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  fig.tight_layout()
  return fig


def plot_pareto(records: Sequence[dict], objectives, summary: dict, path: str) -> str:
  """Writes :func:`pareto_figure` to ``path`` (its extension picks the format); returns ``path``."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  pareto_figure(records, objectives, summary).savefig(path)
  return path
