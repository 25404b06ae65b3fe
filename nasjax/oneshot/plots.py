"""Pictures of a one-shot search: how the architecture probabilities moved, and the cell they produced.

Two views a DARTS reader knows. The op probabilities of every edge over the epochs show whether the
search converged, which edges were decided early and whether parameter-free ops (skip connections) took
over, the collapse studied by Zela et al. ("Understanding and Robustifying Differentiable Architecture
Search", ICLR 2020) and Chu et al. ("DARTS-: Robustly Stepping out of Performance Collapse Without
Indicators", ICLR 2021). The derived cell is drawn as in Liu, Simonyan & Yang ("DARTS: Differentiable
Architecture Search", ICLR 2019, figures 4 and 5): inputs ``c_{k-2}``, ``c_{k-1}``, intermediate nodes
``0 .. n-1``, output ``c_{k}``, each edge labelled with its op. The dominant Hessian eigenvalue of the
validation loss, Zela et al.'s early-stopping signal, is plotted when the history has it.

Only matplotlib's Agg canvas is used (no pyplot, no graphviz), so plotting changes no global state, needs
no display and works inside a running search or a test. Figures are returned by ``*_figure`` functions
for notebooks, and written by ``plot_*`` functions.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from nasjax.errors import NasjaxError
from nasjax.nn.supernet import edge_endpoints
from nasjax.oneshot.method import CELL_TYPES
from nasjax.spaces.genotype import Genotype

# One colour per op across every figure of the library, so 'sep_conv_3x3' looks the same in the alpha
# trajectories and in the cell drawing. Ops outside this list get a colour from a stable hash of the name.
_KNOWN_OPS = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5", "sep_conv_7x7", "conv_1x1", "conv_3x3", "conv_3x1_1x3",
              "conv_7x1_1x7", "max_pool_5x5", "max_pool_7x7", "nor_conv_1x1", "nor_conv_3x3")
_PALETTE = ("#7f7f7f", "#d62728", "#1f77b4", "#17becf", "#2ca02c", "#98df8a", "#9467bd", "#c5b0d5",
            "#bcbd22", "#ff7f0e", "#ffbb78", "#8c564b", "#c49c94", "#aec7e8", "#9edae5", "#e377c2",
            "#f7b6d2")
_NODE_COLORS = {"input": "#c1e1c1", "node": "#add8e6", "output": "#eee8aa"}
_IMAGE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")
_PROB_TOLERANCE = 1e-3  # histories round probabilities to 5 decimals; sums drift by about E-5


def op_color(op: str) -> str:
  """The colour of ``op`` in every plot of this module (a fixed palette; a stable hash for other ops)."""
  if op in _KNOWN_OPS:
    return _PALETTE[_KNOWN_OPS.index(op)]
  # crc32, not hash(): Python salts string hashes per process, and colours should not change between runs.
  rgb = np.frombuffer(zlib.crc32(op.encode()).to_bytes(4, "big"), np.uint8)[:3]
  return "#" + "".join(f"{int(64 + c * 0.6):02x}" for c in rgb)


def node_label(index: int, math_text: bool = True) -> str:
  """Name of node ``index`` in the genotype numbering: 0, 1 are the cell inputs, ``k >= 2`` node ``k-2``."""
  if index == 0:
    return r"$c_{k-2}$" if math_text else "c_{k-2}"
  if index == 1:
    return r"$c_{k-1}$" if math_text else "c_{k-1}"
  return str(index - 2)


# --------------------------------------------------------------------------------------------------
# validation


def _num_nodes_of_edges(num_edges: int, where: str) -> int:
  # Node i has i + 2 incoming edges, so n nodes have n (n + 3) / 2 edges.
  n = int(round((-3 + math.sqrt(9 + 8 * num_edges)) / 2))
  if n < 1 or n * (n + 3) // 2 != num_edges:
    raise NasjaxError(f"{where}: {num_edges} edges is not a cell's edge count (n intermediate nodes have "
                      "n (n + 3) / 2 edges: 2, 5, 9, 14, 20, ...)")
  return n


def _check_ops(ops) -> tuple[str, ...]:
  if isinstance(ops, str) or not isinstance(ops, Sequence) or not ops:
    raise NasjaxError(f"ops must be a non-empty list of op names (e.g. space.supernet_ops); got {ops!r}")
  ops = tuple(ops)
  if not all(isinstance(op, str) and op for op in ops):
    raise NasjaxError(f"ops must be op names (strings); got {list(ops)}")
  if len(set(ops)) != len(ops):
    raise NasjaxError(f"ops repeat a name: {list(ops)}")
  return ops


def _check_cells(cells) -> tuple[str, ...]:
  if isinstance(cells, str):
    cells = (cells,)
  cells = tuple(cells)
  if not cells or any(c not in CELL_TYPES for c in cells) or len(set(cells)) != len(cells):
    raise NasjaxError(f"cells must be distinct names among {', '.join(CELL_TYPES)}; got {list(cells)}")
  return cells


def alpha_series(history, ops, cells=CELL_TYPES, edges=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Validated op probabilities of a search history.

  Args:
    history: the ``history`` of :func:`~nasjax.oneshot.search.run_search` (or the records of its
      ``metrics.jsonl``): one mapping per epoch with ``alphas = {"normal": [[p per op] per edge], ...}``.
    ops: the op names of the probabilities' last axis (``space.supernet_ops``).
    cells: which cell types to return.
    edges: ``(source, destination)`` node pairs of the alphas' edges when the cell is not DARTS-style
      (NB201: ``[(0, 1), (0, 2), (1, 2), ...]``); None for the DARTS topology.

  Returns:
    ``(epochs int[T], {cell: f64[T, E, O]})``.

  Raises:
    NasjaxError: an empty history, records without ``alphas`` (SPOS learns none), shapes that differ
      between records or from ``ops``, an edge count no cell has, or values that are not probabilities.
  """
  ops, cells = _check_ops(ops), _check_cells(cells)
  if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
    raise NasjaxError(f"history must be a list of per-epoch records (dicts); got {type(history).__name__}")
  if not history:
    raise NasjaxError("history is empty: a search history needs at least one epoch record with 'alphas'")
  epochs, series = [], {c: [] for c in cells}
  for t, record in enumerate(history):
    if not isinstance(record, Mapping):
      raise NasjaxError(f"history[{t}] must be a dict (one epoch's record); got {type(record).__name__}")
    alphas = record.get("alphas")
    if not isinstance(alphas, Mapping):
      raise NasjaxError(f"history[{t}] has no 'alphas' mapping {{'normal': [[...]], 'reduce': [[...]]}}; "
                        "only methods with architecture parameters (darts, gdas, pcdarts, drnas) record them")
    epoch = record.get("epoch", t + 1)
    if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool):
      raise NasjaxError(f"history[{t}]['epoch'] must be an integer; got {epoch!r}")
    if epochs and epoch <= epochs[-1]:
      raise NasjaxError(f"history epochs must increase; history[{t}] has epoch {epoch} after {epochs[-1]}")
    epochs.append(int(epoch))
    for c in cells:
      if c not in alphas:
        raise NasjaxError(f"history[{t}]['alphas'] lacks the {c!r} cell; it has {sorted(map(str, alphas))}")
      try:
        p = np.asarray(alphas[c], np.float64)
      except (TypeError, ValueError):
        raise NasjaxError(f"history[{t}]['alphas'][{c!r}] must be a rectangular [edges][ops] list of "
                          "numbers") from None
      if p.ndim != 2 or p.shape[1] != len(ops):
        raise NasjaxError(f"history[{t}]['alphas'][{c!r}] has shape {p.shape}; expected [edges, {len(ops)}] "
                          f"for ops {list(ops)}")
      if series[c] and p.shape != series[c][0].shape:
        raise NasjaxError(f"history[{t}]['alphas'][{c!r}] has shape {p.shape} but history[0] has "
                          f"{series[c][0].shape}")
      if not np.all(np.isfinite(p)):
        raise NasjaxError(f"history[{t}]['alphas'][{c!r}] holds non-finite values")
      sums = p.sum(axis=1)
      if p.min() < -_PROB_TOLERANCE or np.max(np.abs(sums - 1.0)) > _PROB_TOLERANCE:
        raise NasjaxError(f"history[{t}]['alphas'][{c!r}] are not probabilities (each edge's row must be "
                          f"non-negative and sum to 1; row sums range {sums.min():.4g}..{sums.max():.4g}); "
                          "pass the softmax of the logits, as run_search records")
      series[c].append(p)
  out = {c: np.stack(v) for c, v in series.items()}
  for c in cells:
    if edges is None:
      _num_nodes_of_edges(out[c].shape[1], f"the {c} alphas")
    elif out[c].shape[1] != len(edges):
      raise NasjaxError(f"the {c} alphas have {out[c].shape[1]} edges; the cell has {len(edges)}")
  return np.asarray(epochs, np.int64), out


def _as_genotype(genotype) -> Genotype:
  if isinstance(genotype, Genotype):
    return genotype
  if isinstance(genotype, str):
    return Genotype.from_string(genotype)
  raise NasjaxError(f"genotype must be a nasjax.spaces.Genotype or its DARTS-notation string; got "
                    f"{type(genotype).__name__}")


def _check_cell_name(cell) -> str:
  if cell not in CELL_TYPES:
    raise NasjaxError(f"cell must be one of {', '.join(CELL_TYPES)}; got {cell!r}")
  return cell


def _check_path(path) -> tuple[str, str]:
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower().lstrip(".")
  if ext not in _IMAGE_FORMATS:
    raise NasjaxError(f"cannot write a figure to {path!r}: the file name must end in one of "
                      f"{', '.join('.' + e for e in _IMAGE_FORMATS)}")
  return path, ext


def _save(fig: Figure, path) -> str:
  path, ext = _check_path(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  FigureCanvasAgg(fig)
  fig.savefig(path, format=ext, dpi=fig.dpi)
  return path


# --------------------------------------------------------------------------------------------------
# alpha trajectories


def _kept_edges(genotype, record: Mapping, cell: str, num_nodes: int) -> dict[tuple[int, int], str]:
  """(source, node) -> op of the edges ``genotype`` keeps; without one, those of the record's genotype."""
  where = "the genotype"
  if genotype is None:
    genotype, where = record.get("genotype"), "the last record's genotype"
    if not isinstance(genotype, str):
      return {}
  genotype = _as_genotype(genotype)
  entries = genotype.normal if cell == "normal" else genotype.reduce
  if len(entries) // 2 != num_nodes:
    raise NasjaxError(f"{where} has {len(entries) // 2} intermediate nodes in its {cell} cell but the alphas "
                      f"describe {num_nodes}")
  return {(inp, k // 2): op for k, (op, inp) in enumerate(entries)}


def alpha_figure(history, ops, cells=CELL_TYPES, genotype=None, edges=None) -> Figure:
  """One panel group per cell type; a subplot per edge (row = destination node, column = source) with
  each op's probability over the epochs and a shared legend of op names. Edges kept by ``genotype``
  (default: the last record's; an anti-collapse stop keeps an earlier one) get a heavy frame and their op
  in the title.

  ``edges``: ``(source, destination)`` pairs of a cell that is not DARTS-style (NB201, whose node 0 is the
  input); ``genotype`` is then None or a mapping ``{(source, destination): op}`` of the chosen ops."""
  epochs, series = alpha_series(history, ops, cells, edges)
  ops, cells = tuple(ops), _check_cells(cells)
  if edges is None:
    num_nodes = _num_nodes_of_edges(series[cells[0]].shape[1], "alphas")
    src, dst = edge_endpoints(num_nodes)
    rows, cols, first_row = num_nodes, num_nodes + 1, 0
  else:
    src, dst = (np.asarray([e[k] for e in edges], np.int64) for k in (0, 1))
    first_row = int(dst.min())
    rows, cols = int(dst.max()) - first_row + 1, int(src.max()) + 1
  # A fixed grid, not matplotlib's constrained layout: that measures every tick label of the 14-28 axes
  # and takes seconds per figure; the sizes below leave room for two-line titles and the legend.
  panel_w, panel_h, left, gap, top, bottom = 1.75, 1.55, 0.55, 0.35, 0.75, 0.95
  width = len(cells) * (left + cols * panel_w) + (len(cells) - 1) * gap + 0.15
  legend_cols = max(1, min(len(ops), int(width / 1.35)))  # an op name and its line take ~1.3 inches
  bottom += 0.2 * math.ceil(len(ops) / legend_cols)
  height = top + rows * panel_h + bottom
  fig = Figure(figsize=(width, height), dpi=100)
  one_epoch = len(epochs) == 1
  for g, cell in enumerate(cells):
    probs = series[cell]
    if edges is not None:
      kept = dict(genotype or {})
    elif _num_nodes_of_edges(probs.shape[1], f"the {cell} alphas") != num_nodes:
      raise NasjaxError(f"the normal and reduction alphas have different edge counts: "
                        f"{series[cells[0]].shape[1]} and {probs.shape[1]}")
    else:
      kept = _kept_edges(genotype, history[-1], cell, num_nodes)
    x0 = g * (left + cols * panel_w + gap) + left
    grid = fig.add_gridspec(rows, cols, left=x0 / width, right=(x0 + cols * panel_w - 0.1) / width,
                            top=1 - top / height, bottom=bottom / height, hspace=0.75, wspace=0.12)
    fig.text((x0 + cols * panel_w / 2) / width, 1 - 0.12 / height, f"{cell} cell: op probabilities per edge",
             ha="center", va="top", fontsize=11)
    first = None
    for e in range(len(src)):
      row = int(dst[e]) - first_row
      ax = fig.add_subplot(grid[row, src[e]], sharex=first, sharey=first)
      first = first or ax
      for o, op in enumerate(ops):
        ax.plot(epochs, probs[:, e, o], color=op_color(op), lw=1.4, ls="--" if op == "none" else "-",
                marker="o" if one_epoch else None, ms=3, label=op)
      title = f"{node_label(int(src[e])) if edges is None else src[e]} → {dst[e]}"
      chosen = kept.get((int(src[e]), int(dst[e])))
      if chosen is not None:
        title += f"\n{chosen}"
        for spine in ax.spines.values():
          spine.set_linewidth(2.0)
      ax.set_title(title, fontsize=8, fontweight="bold" if chosen else "normal")
      ax.set_ylim(-0.02, 1.02)
      ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True, min_n_ticks=1))
      if one_epoch:
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
      ax.grid(alpha=0.3)
      # Every column reaches the last row (the last node reads every earlier node), so x ticks are
      # labelled there only; y ticks in the first column only.
      ax.tick_params(labelsize=7, labelbottom=bool(row == rows - 1), labelleft=bool(src[e] == 0))
      if src[e] == 0:
        ax.set_ylabel("p", fontsize=8)
      if row == rows - 1:
        ax.set_xlabel("epoch", fontsize=8)
  handles = [Line2D([], [], color=op_color(op), lw=2, ls="--" if op == "none" else "-") for op in ops]
  fig.legend(handles, ops, loc="lower center", ncol=legend_cols, fontsize=8, frameon=False)
  return fig


def plot_alpha_trajectories(history, ops, path, cells=CELL_TYPES, genotype=None, edges=None) -> str:
  """Writes :func:`alpha_figure` of ``cells`` (both cell types by default, as two panel groups) to
  ``path`` (.png, .pdf or .svg) and returns the path.

  Raises:
    NasjaxError: see :func:`alpha_series`; an unsupported file extension.
  """
  _check_path(path)  # before the figure is drawn: a typo in the name should not cost a drawing
  return _save(alpha_figure(history, ops, cells, genotype, edges), path)


# --------------------------------------------------------------------------------------------------
# the derived cell


def cell_graph(genotype, cell: str) -> dict[str, Any]:
  """The layered layout of one cell of ``genotype``.

  Node ids follow the genotype numbering (0, 1 inputs, ``k >= 2`` intermediate node ``k - 2``) and
  ``"out"`` for ``c_{k}``. An intermediate node sits one layer after its deepest input, the output one
  layer after the deepest concatenated node; within a layer nodes are ordered by the mean height of their
  inputs (one barycentre pass, which removes most crossings of such small graphs).

  Returns:
    ``{"layer": {id: int}, "pos": {id: (x, y)}, "edges": [(src, dst, op)], "concat": [ids]}``; op
    edges first (in genotype order), then the concatenation edges ``(k, "out", None)``.

  Raises:
    NasjaxError: ``cell`` is not normal/reduce, or an input or concat index names a node that does not
      exist at that point of the cell.
  """
  genotype, cell = _as_genotype(genotype), _check_cell_name(cell)
  entries = genotype.normal if cell == "normal" else genotype.reduce
  concat = genotype.normal_concat if cell == "normal" else genotype.reduce_concat
  num_nodes = len(entries) // 2
  edges: list[tuple[Any, Any, str | None]] = []
  for k, (op, inp) in enumerate(entries):
    node = 2 + k // 2
    if inp >= node:
      raise NasjaxError(f"{cell} cell: intermediate node {node - 2} takes input {inp}, but only inputs "
                        f"0..{node - 1} exist before it (0, 1 are the cell inputs, k >= 2 is node k-2)")
    edges.append((inp, node, op))
  for k in concat:
    if k >= 2 + num_nodes:
      raise NasjaxError(f"{cell}_concat names node {k}, but the cell has nodes 0..{num_nodes + 1}")
    edges.append((k, "out", None))
  layer: dict[Any, int] = {0: 0, 1: 0}
  for node in range(2, 2 + num_nodes):
    layer[node] = 1 + max(layer[s] for s, d, _ in edges if d == node)
  layer["out"] = 1 + max(layer[k] for k in concat)
  by_layer: dict[int, list] = {}
  for node, lay in layer.items():
    by_layer.setdefault(lay, []).append(node)
  pos: dict[Any, tuple[float, float]] = {}
  x_gap, y_gap = 2.6, 1.5
  for lay in sorted(by_layer):
    members = by_layer[lay]
    if lay > 0:
      def barycentre(node):
        ys = [pos[s][1] for s, d, _ in edges if d == node and s in pos]
        return -float(np.mean(ys)) if ys else 0.0
      members = sorted(members, key=lambda n: (barycentre(n), -1 if n == "out" else n))
    top = (len(members) - 1) / 2 * y_gap
    for i, node in enumerate(members):
      pos[node] = (lay * x_gap, top - i * y_gap)
  return {"layer": layer, "pos": pos, "edges": edges, "concat": list(concat)}


def _segment_distance(p, a, b) -> float:
  a, b, p = np.asarray(a), np.asarray(b), np.asarray(p)
  t = np.clip(np.dot(p - a, b - a) / max(np.dot(b - a, b - a), 1e-12), 0.0, 1.0)
  return float(np.linalg.norm(a + t * (b - a) - p))


def _curvature(graph: dict, src, dst, others_between: list, duplicate_rank: int) -> float:
  """arc3 curvature of an edge: 0 when the straight arrow is clear, else bent away from what blocks it.

  The bend is chosen as a displacement of the arrow's middle in data units (arc3 moves it by rad / 2
  times the chord length), so long and short arrows bow equally and stay inside the drawing.
  """
  pos = graph["pos"]
  a, b = pos[src], pos[dst]
  chord = max(math.dist(a, b), 1e-9)
  if duplicate_rank:
    bow = 0.45 * ((duplicate_rank + 1) // 2) * (1 if duplicate_rank % 2 else -1)
    return 2 * bow / chord
  blockers = [pos[n] for n in others_between if _segment_distance(pos[n], a, b) < 0.65]
  if not blockers:
    return 0.0
  best, best_clear = 2 * 0.8 / chord, -1.0
  for bow in (0.8, -0.8, 1.2, -1.2):
    rad = 2 * bow / chord
    mid = _arc_point(a, b, rad, 0.5)
    clear = min(math.dist(mid, p) for p in (pos[n] for n in graph["pos"] if n not in (src, dst)))
    if clear > best_clear + 1e-9:
      best, best_clear = rad, clear
    if clear > 0.9:
      break
  return best


def _arc_point(a, b, rad: float, t: float) -> tuple[float, float]:
  """Point ``t`` of matplotlib's arc3 curve from a to b: a quadratic Bezier whose control point is the
  chord midpoint moved by rad * (dy, -dx) (valid in data units because the axes have equal aspect)."""
  (x1, y1), (x2, y2) = a, b
  cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
  u = 1.0 - t
  return u * u * x1 + 2 * u * t * cx + t * t * x2, u * u * y1 + 2 * u * t * cy + t * t * y2


def _label_position(pos: dict, src, dst, rad: float, placed: list, radius: float) -> tuple[float, float]:
  """Where along its arrow an op label goes: the middle unless that collides with a label already placed
  or a node (crossing arrows share their middles), else the clearest of a few points along the curve."""
  label_w, label_h = 1.05, 0.32  # an op name at 7.5 pt, in data units of the layout grid
  best, best_score = None, -1.0
  for t in (0.5, 0.38, 0.62, 0.3, 0.7, 0.45, 0.55):
    x, y = _arc_point(pos[src], pos[dst], rad, t)
    score = min([max(abs(x - px) / label_w, abs(y - py) / label_h) for px, py in placed]
                + [math.dist((x, y), p) / (radius + 0.5 * label_w) for p in pos.values()] + [10.0])
    if score >= 1.0:
      return x, y
    if score > best_score:
      best, best_score = (x, y), score
  return best


def cell_figure(genotype, cell: str) -> Figure:
  """The cell of ``genotype`` as a layered graph (left to right), arrows labelled with their ops."""
  graph = cell_graph(genotype, cell)
  pos, layer = graph["pos"], graph["layer"]
  routes, seen = [], {}
  for src, dst, op in graph["edges"]:
    rank = seen.get((src, dst), 0)
    seen[(src, dst)] = rank + 1
    between = [n for n in pos if n not in (src, dst) and layer[src] <= layer[n] <= layer[dst]]
    routes.append((src, dst, op, _curvature(graph, src, dst, between, rank)))
  # The drawing's extent covers the bowed arrows too, not just the nodes.
  points = [_arc_point(pos[s], pos[d], rad, t) for s, d, _, rad in routes for t in np.linspace(0, 1, 11)]
  points += list(pos.values())
  x_lo, x_hi = min(p[0] for p in points) - 0.8, max(p[0] for p in points) + 0.8
  y_lo, y_hi = min(p[1] for p in points) - 0.75, max(p[1] for p in points) + 0.75
  scale = 0.95  # inches per layout unit: 7.5 pt op names fit between two layers
  fig = Figure(figsize=((x_hi - x_lo) * scale + 0.1, (y_hi - y_lo) * scale + 0.45), dpi=100)
  height = (y_hi - y_lo) * scale + 0.45
  ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.45 / height))
  ax.set_xlim(x_lo, x_hi)
  ax.set_ylim(y_lo, y_hi)
  ax.set_aspect("equal", adjustable="box")
  ax.axis("off")
  radius = 0.42
  patches = {}
  for node, (x, y) in pos.items():
    if node == "out":
      kind, text = "output", r"$c_{k}$"
    elif node in (0, 1):
      kind, text = "input", node_label(node)
    else:
      kind, text = "node", node_label(node)
    if kind == "node":
      patch = Circle((x, y), radius, facecolor=_NODE_COLORS[kind], edgecolor="black", lw=1.2, zorder=3)
    else:
      patch = FancyBboxPatch((x - radius * 1.25, y - radius * 0.8), 2.5 * radius, 1.6 * radius,
                             boxstyle="round,pad=0.02,rounding_size=0.15", facecolor=_NODE_COLORS[kind],
                             edgecolor="black", lw=1.2, zorder=3)
    ax.add_patch(patch)
    patches[node] = patch
    ax.text(x, y, text, ha="center", va="center", fontsize=11, zorder=4)
  labels: list[tuple[float, float]] = []
  for src, dst, op, rad in routes:
    color = "#555555" if op is None else op_color(op)
    arrow = FancyArrowPatch(pos[src], pos[dst], patchA=patches[src], patchB=patches[dst],
                            arrowstyle="-|>", mutation_scale=12, lw=1.4 if op else 1.0, color=color,
                            connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1, zorder=2)
    ax.add_patch(arrow)
    if op is not None:
      mx, my = _label_position(pos, src, dst, rad, labels, radius)
      labels.append((mx, my))
      ax.text(mx, my, op, ha="center", va="center", fontsize=7.5, color="black", zorder=5,
              bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor=color, lw=0.8, alpha=0.9))
  genotype = _as_genotype(genotype)
  concat = genotype.normal_concat if cell == "normal" else genotype.reduce_concat
  fig.suptitle(f"{cell} cell (output concatenates {', '.join(node_label(k, False) for k in concat)})",
               fontsize=10)
  return fig


def plot_cell(genotype, cell: str, path) -> str:
  """Writes :func:`cell_figure` of ``genotype``'s ``cell`` ("normal" or "reduce") to ``path``.

  Raises:
    NasjaxError: see :func:`cell_graph`; a genotype string that does not parse; a bad file extension.
  """
  _check_path(path)
  return _save(cell_figure(genotype, cell), path)


# --------------------------------------------------------------------------------------------------
# eigenvalue and the whole search


def eigenvalue_figure(history) -> Figure:
  """The dominant Hessian eigenvalue of the validation loss per epoch (Zela et al. 2020), with the epoch
  at which an anti-collapse rule stopped the search, if one did."""
  if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence) or not history:
    raise NasjaxError("history must be a non-empty list of per-epoch records")
  points = [(r.get("epoch", t + 1), r["hessian_eigenvalue"]) for t, r in enumerate(history)
            if isinstance(r, Mapping) and r.get("hessian_eigenvalue") is not None]
  if not points:
    raise NasjaxError("no record of the history has 'hessian_eigenvalue'; set eigen_every > 0 in the search "
                      "config to log it")
  epochs, values = (np.asarray(v, np.float64) for v in zip(*points))
  if not np.all(np.isfinite(values)):
    raise NasjaxError("history holds a non-finite 'hessian_eigenvalue'")
  fig = Figure(figsize=(6.0, 3.6), dpi=100)
  ax = fig.add_subplot(1, 1, 1)
  ax.plot(epochs, values, marker="o", ms=3, color="#1f77b4")
  for t, r in enumerate(history):
    if isinstance(r, Mapping) and r.get("stopped"):
      stop = r.get("epoch", t + 1)
      ax.axvline(stop, color="#d62728", ls="--", lw=1)
      # x in data units, y in axes units: the note sits above the plot whatever the eigenvalues' range.
      ax.text(stop, 1.01, f"stopped at epoch {stop}", transform=ax.get_xaxis_transform(), ha="center",
              va="bottom", fontsize=8, color="#d62728")
  ax.set_xlabel("epoch")
  ax.set_ylabel(r"dominant eigenvalue of $\nabla^2_\alpha L_{valid}$")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def controller_figure(history, xlabel: str = "epoch") -> Figure:
  """A controller search per epoch (ENAS) or per round (NAS-RL): mean reward with the baseline, the
  policy's entropy, and the best sampled architecture's accuracy so far."""
  if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence) or not history:
    raise NasjaxError("history must be a non-empty list of per-epoch records")
  needed = ("reward", "baseline", "entropy")
  records = [r for r in history if isinstance(r, Mapping) and all(k in r for k in needed)]
  if not records:
    raise NasjaxError(f"no record of the history has {', '.join(needed)}: is it a controller search's?")
  epochs = np.asarray([r.get("epoch", r.get("round", t + 1)) for t, r in enumerate(records)], np.float64)
  fig = Figure(figsize=(9.0, 3.2), dpi=100)
  panels = fig.subplots(1, 3)
  panels[0].plot(epochs, [r["reward"] for r in records], marker="o", ms=3, label="mean reward")
  panels[0].plot(epochs, [r["baseline"] for r in records], ls="--", label="baseline")
  panels[0].legend(fontsize=8)
  panels[1].plot(epochs, [r["entropy"] for r in records], marker="o", ms=3, color="#9467bd")
  panels[1].set_ylabel("entropy of a sample (nats)")
  best = [r.get("best_sample_accuracy") for r in records]
  if any(b is not None for b in best):
    panels[2].plot(epochs, [np.nan if b is None else b for b in best], marker="o", ms=3, color="#2ca02c")
  panels[2].set_ylabel("best sample so far (valid acc.)")
  for ax in panels:
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    if len(epochs) <= 10:
      ax.set_xticks(epochs)
    else:
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  fig.tight_layout()
  return fig


def plot_controller(history, path, xlabel: str = "epoch") -> str:
  """Writes :func:`controller_figure` to ``path``; returns the path."""
  return _save(controller_figure(history, xlabel), path)


def plot_search(history, genotype, ops, outdir) -> list[str]:
  """Writes the pictures of a finished search into ``outdir`` and returns their paths.

  ``alphas_normal.png``, ``alphas_reduce.png`` (op probabilities per edge over the epochs),
  ``cell_normal.png``, ``cell_reduce.png`` (the derived cells) and, when any record has
  ``hessian_eigenvalue``, ``eigenvalue.png``.

  Args:
    history: ``run_search(...)["history"]``.
    genotype: the derived :class:`~nasjax.spaces.Genotype` (or its DARTS-notation string).
    ops: the op names of the probabilities (``space.supernet_ops``).
    outdir: created if absent.

  Raises:
    NasjaxError: a history without probabilities (see :func:`alpha_series`), a genotype whose node count
      differs from the alphas' cell, or one :func:`cell_graph` rejects. Nothing is written then.
  """
  genotype = _as_genotype(genotype)
  _, series = alpha_series(history, ops)
  for cell in CELL_TYPES:
    nodes = _num_nodes_of_edges(series[cell].shape[1], f"the {cell} alphas")
    entries = genotype.normal if cell == "normal" else genotype.reduce
    if len(entries) // 2 != nodes:
      raise NasjaxError(f"the genotype's {cell} cell has {len(entries) // 2} intermediate nodes but the "
                        f"alphas describe {nodes}")
    cell_graph(genotype, cell)
  outdir = os.fspath(outdir)
  os.makedirs(outdir, exist_ok=True)
  paths = []
  for cell in CELL_TYPES:
    paths.append(plot_alpha_trajectories(history, ops, os.path.join(outdir, f"alphas_{cell}.png"),
                                         cells=(cell,), genotype=genotype))
  for cell in CELL_TYPES:
    paths.append(plot_cell(genotype, cell, os.path.join(outdir, f"cell_{cell}.png")))
  if any(isinstance(r, Mapping) and r.get("hessian_eigenvalue") is not None for r in history):
    paths.append(_save(eigenvalue_figure(history), os.path.join(outdir, "eigenvalue.png")))
  return paths


# Not drawn for NB201: the DARTS cell drawing (inputs c_{k-2}, c_{k-1}, two kept edges per node) does not
# describe its 4-node cell, whose string is the result's genotype.
NB201_SKIPPED_PLOTS = {"cell_normal.png": "not drawn for nb201: the cell is the genotype string "
                                          "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"}


def plot_nb201_search(history, arch, outdir) -> list[str]:
  """NB201's pictures of a finished search into ``outdir``: ``alphas_normal.png`` (op probabilities of
  the 6 edges over the epochs, each edge titled with its derived op ``arch[e]``) and, when any record has
  ``hessian_eigenvalue``, ``eigenvalue.png``. The cell is not drawn (:data:`NB201_SKIPPED_PLOTS`)."""
  from nasjax.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Space
  arch = NB201Space().check(arch)
  edges = [(src, dst) for dst, src in NB201_EDGES]
  chosen = {edge: NB201_OPS[int(a)] for edge, a in zip(edges, arch)}
  _check_path(os.path.join(os.fspath(outdir), "alphas_normal.png"))
  alpha_series(history, NB201_OPS, ("normal",), edges)  # refused before anything is written
  os.makedirs(os.fspath(outdir), exist_ok=True)
  paths = [plot_alpha_trajectories(history, NB201_OPS, os.path.join(os.fspath(outdir), "alphas_normal.png"),
                                   cells=("normal",), genotype=chosen, edges=edges)]
  if any(isinstance(r, Mapping) and r.get("hessian_eigenvalue") is not None for r in history):
    paths.append(_save(eigenvalue_figure(history), os.path.join(os.fspath(outdir), "eigenvalue.png")))
  return paths
