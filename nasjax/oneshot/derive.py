"""From architecture probabilities to a discrete cell: the DARTS derivation rule.

Liu et al. (ICLR 2019, section 2.4): every intermediate node keeps its two strongest incoming edges, an
edge's strength being its largest probability over the ops other than ``none``, and each kept edge takes
that strongest op. PC-DARTS multiplies the strength by the normalised edge weight.
"""

from __future__ import annotations

import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.supernet import edge_endpoints
from nasjax.oneshot.method import CELL_TYPES


def derive_arch(space, probabilities: dict, edge_strength: dict | None = None) -> np.ndarray:
  """The encoding (in ``space``, a cell space) of the cell pair the probabilities select.

  ``probabilities[c]`` is f32[E, O] over ``space.supernet_ops`` (op 0 is ``none``).
  """
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
  genotype = space.decode(arch)
  entries = genotype.normal if cell == "normal" else genotype.reduce
  return sum(1 for name, _ in entries if name == op)
