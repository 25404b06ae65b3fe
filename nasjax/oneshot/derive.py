"""From architecture probabilities to a discrete cell: the DARTS derivation rule.

Liu et al. (ICLR 2019, section 2.4): every intermediate node keeps its two strongest incoming edges, an
edge's strength being its largest probability over the ops other than ``none``, and each kept edge takes
that strongest op. PC-DARTS multiplies the strength by the normalised edge weight.

NAS-Bench-201 (Dong & Yang, ICLR 2020) keeps every edge and takes its arg-max op, ``none`` included (the
benchmark's space has it): :func:`derive_nb201`.
"""

from __future__ import annotations

import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.supernet import edge_endpoints
from nasjax.oneshot.method import CELL_TYPES
from nasjax.spaces.nb201 import NB201_OPS, NB201Space


def derive_nb201(space, probabilities: dict) -> np.ndarray:
  """The NB201 cell (int32[6]) of the arg-max op of every edge of ``probabilities["normal"]`` (f32[6, 5])."""
  p = np.asarray(probabilities["normal"], np.float64)
  if p.shape != (len(space.edges), len(NB201_OPS)):
    raise NasjaxError(f"nb201 probabilities have shape {p.shape}; expected {(len(space.edges), len(NB201_OPS))}")
  if not np.all(np.isfinite(p)):
    raise NasjaxError("nb201 architecture probabilities are not finite; no cell can be derived")
  return space.check(np.argmax(p, axis=1).astype(np.int32))


def derive_arch(space, probabilities: dict, edge_strength: dict | None = None) -> np.ndarray:
  """The encoding (in ``space``, a cell space or NB201) of the cell(s) the probabilities select.

  ``probabilities[c]`` is f32[E, O] over ``space.supernet_ops`` (op 0 is ``none``); for NB201 only
  ``"normal"``, over :data:`~nasjax.spaces.NB201_OPS`.
  """
  if isinstance(space, NB201Space):
    if edge_strength is not None:
      raise NasjaxError("nb201 keeps every edge; an edge strength (PC-DARTS) has nothing to choose")
    return derive_nb201(space, probabilities)
  ops = tuple(space.supernet_ops)
  if ops[0] != "none":
    raise NasjaxError(f"derivation expects 'none' as supernet op 0, got {ops}")
  src, dst = edge_endpoints(space.num_nodes)
  cells = np.zeros((2, space.num_nodes, 4), np.int32)
  for c, cell in enumerate(CELL_TYPES):
    p = np.asarray(probabilities[cell], np.float64)
    if p.shape != (len(src), len(ops)):
      raise NasjaxError(f"{cell} probabilities have shape {p.shape}; expected {(len(src), len(ops))}")
    if not np.all(np.isfinite(p)):
      raise NasjaxError(f"{cell} architecture probabilities are not finite; no genotype can be derived")
    best_op = 1 + np.argmax(p[:, 1:], axis=1)
    strength = p[np.arange(len(src)), best_op]
    if edge_strength is not None:
      strength = strength * np.asarray(edge_strength[cell], np.float64)
    for node in range(space.num_nodes):
      edges = np.flatnonzero(dst == node)
      # Stable sort: ties keep the lower input first, so the result does not depend on float noise order.
      kept = edges[np.argsort(-strength[edges], kind="stable")[:2]]
      for slot, e in enumerate(kept):
        cells[c, node, 2 * slot] = src[e]
        cells[c, node, 2 * slot + 1] = best_op[e] - 1  # index into space.ops, which lacks 'none'
  return space.check(cells.ravel())


def count_op(space, arch, op: str, cell: str = "normal") -> int:
  """How many of a cell's kept edges use ``op`` (DARTS+ stops a search on too many skip connections)."""
  if isinstance(space, NB201Space):
    return int(np.sum(space.check(arch) == NB201_OPS.index(op))) if op in NB201_OPS else 0
  genotype = space.decode(arch)
  entries = genotype.normal if cell == "normal" else genotype.reduce
  return sum(1 for name, _ in entries if name == op)
