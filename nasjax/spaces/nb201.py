"""NAS-Bench-201 cell space.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search", ICLR 2020.
A cell is a DAG of 4 nodes; each of the 6 edges ``j -> i`` (``j < i``) carries one of 5 ops
(``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``), node ``i`` sums its incoming edges
and node 3 is the cell output: 5**6 = 15,625 cells.

Encoding: ``int32[6]`` op indices in the order of the benchmark's string notation
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, i.e. edges (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2).

Index: :meth:`NB201Space.arch_to_index` reads the 6 op indices as a base-5 number with the FIRST edge as
the most significant digit, so ``index == int(ops_code(arch), 5)`` (this is our order, not the row order
of the benchmark's data files).

Isomorphism: :meth:`NB201Space.canonical_string` reproduces the equivalence NAS-Bench-201 uses to count
its 6,466 unique cells (``to_unique_str(consider_zero=True)`` in the benchmark's API):

* an edge is *zero* (written ``0``) if its op is ``none`` or its source is the zero marker ``0``;
  a zero term stays in its node's sum, and a node whose terms are all zero is the sum ``0+0`` -- not
  the zero marker -- so it is not propagated as zero further down;
* ``skip_connect`` forwards its source expression unchanged; any other op on expression ``f`` is
  written ``op(f)``; the cell input is ``x``;
* a node is the sum of its incoming terms, joined with ``+`` after sorting them by their benchmark key
  (the benchmark's spelling: ``#`` for zero, ``0`` for the input, ``(f)@op`` for an op). A sum forwarded
  by a skip is spliced into the next sum as one unit, not re-sorted with its siblings.

Both the zero rule and the sort key matter. The "clean" rule (a node whose inputs are all zero is zero,
zero terms are dropped) gives 5,390 classes (5,773 if forwarded sums stay parenthesised units), and
sorting the benchmark rule's terms by our ``op(f)`` spelling (``x`` input, ``0`` zero) instead of the
benchmark key gives 6,344: only the benchmark's rule with its key gives the published 6,466, so we sort
by that key and print our spelling, which maps one-to-one onto the benchmark's strings.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.spaces.base import Arch, Space, require_str, shorten

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (destination, source), encoding order
NUM_CELLS = 5 ** 6
NUM_UNIQUE = 6466
_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
_EDGE_RE = re.compile(r"([A-Za-z0-9_]+)~([0-9]+)\Z")
_POWERS = 5 ** np.arange(5, -1, -1, dtype=np.int32)  # first edge most significant


@dataclasses.dataclass(frozen=True)
class NB201Space(Space):
  """The NAS-Bench-201 cell: 6 edges, 5 ops each, all 15,625 encodings valid."""

  name: str = "nb201"

  ops = NB201_OPS
  edges = NB201_EDGES

  @property
  def num_choices(self) -> tuple[int, ...]:
    return (len(NB201_OPS),) * len(NB201_EDGES)

  @property
  def gene_groups(self) -> tuple[int, ...]:
    # Crossover inherits a destination node's incoming edges together.
    return tuple(dst - 1 for dst, _ in NB201_EDGES)

  def decision_name(self, d: int) -> str:
    dst, src = NB201_EDGES[d]
    return f"edge {d} (node {dst} <- node {src})"

  # ---------------------------------------------------------------------------------- notation
  def to_string(self, arch: Any) -> str:
    a = self.check(arch)
    nodes, e = [], 0
    for dst in (1, 2, 3):
      nodes.append("|" + "|".join(f"{NB201_OPS[a[e + j]]}~{j}" for j in range(dst)) + "|")
      e += dst
    return "+".join(nodes)

  def from_string(self, s: str) -> np.ndarray:
    require_str(self.name, s, _EXAMPLE)
    text = s.strip()
    parts = text.split("+")
    if len(parts) != 3:
      raise NasjaxError(f"nb201: a cell string has 3 nodes separated by '+', got {len(parts)} in "
                        f"{shorten(s)!r}; expected format like {_EXAMPLE!r}")
    out = []
    for dst, part in enumerate(parts, start=1):
      if len(part) < 2 or not part.startswith("|") or not part.endswith("|"):
        raise NasjaxError(f"nb201: node {dst} must be written between '|' bars, got {shorten(part)!r}; "
                          f"expected format like {_EXAMPLE!r}")
      edges = part[1:-1].split("|")
      if len(edges) != dst:
        raise NasjaxError(f"nb201: node {dst} must have {dst} incoming edge(s) (from nodes "
                          f"0..{dst - 1}), got {len(edges)} in {shorten(part)!r}")
      for src, edge in enumerate(edges):
        m = _EDGE_RE.match(edge.strip())
        if m is None:
          raise NasjaxError(f"nb201: edge {shorten(edge)!r} of node {dst} is not 'op~source'; "
                            f"expected format like {_EXAMPLE!r}")
        op, given = m.group(1), m.group(2)
        if op not in NB201_OPS:
          raise NasjaxError(f"nb201: unknown op {shorten(op)!r} on edge {dst}<-{src}; accepted ops: "
                            f"{', '.join(NB201_OPS)}")
        if len(given) > 3 or int(given) != src:
          raise NasjaxError(f"nb201: edge {src + 1} of node {dst} must come from node {src} "
                            f"(write {op}~{src}), got "
                            f"{shorten(edge)!r}")
        out.append(NB201_OPS.index(op))
    return np.asarray(out, np.int32)

  # ---------------------------------------------------------------------------------- indices
  def arch_to_index(self, arch: Arch) -> jax.Array:
    """Base-5 index, first edge most significant (jittable); inverse of :meth:`index_to_arch`."""
    return jnp.sum(jnp.asarray(arch, jnp.int32) * jnp.asarray(_POWERS)).astype(jnp.int32)

  def index_to_arch(self, index: jax.Array) -> Arch:
    """The architecture with base-5 index ``index`` in [0, 15625) (jittable)."""
    return ((jnp.asarray(index, jnp.int32) // jnp.asarray(_POWERS)) % 5).astype(jnp.int32)

  def ops_code(self, arch: Any) -> str:
    """Host side: the 6 op indices in edge order as a string, e.g. '330131'."""
    return "".join(str(int(v)) for v in self.check(arch))

  # ---------------------------------------------------------------------------------- isomorphism
  def canonical_string(self, arch: Any) -> str:
    """Host side: a string equal for cells NAS-Bench-201 counts as the same (see module docstring)."""
    return _canonical(tuple(int(v) for v in self.check(arch)))

  def unique_ids(self) -> np.ndarray:
    """np.int32[15625]: for every index, the smallest index of its isomorphism class (read-only,
    computed once per process)."""
    return _unique_ids()

  @property
  def num_unique(self) -> int:
    return NUM_UNIQUE

  def canonicalize(self, arch: Arch) -> Arch:
    """The smallest-index architecture isomorphic to ``arch`` (jittable lookup in :meth:`unique_ids`)."""
    table = jnp.asarray(self.unique_ids())
    return self.index_to_arch(table[self.arch_to_index(arch)])


def _canonical(arch: tuple[int, ...]) -> str:
  # Each node is (benchmark key, our spelling); sorting by the key reproduces the benchmark's classes.
  key = {0: "0"}
  text = {0: "x"}
  for dst in (1, 2, 3):
    terms = []
    for e, (d, src) in enumerate(NB201_EDGES):
      if d != dst:
        continue
      op = NB201_OPS[arch[e]]
      if op == "none" or key[src] == "#":
        terms.append(("#", "0"))
      elif op == "skip_connect":
        terms.append((key[src], text[src]))
      else:
        terms.append((f"({key[src]})@{op}", f"{op}({text[src]})"))
    terms.sort()
    key[dst] = "+".join(k for k, _ in terms)
    text[dst] = "+".join(t for _, t in terms)
  return text[3]


@functools.lru_cache(maxsize=1)
def _unique_ids() -> np.ndarray:
  digits = (np.arange(NUM_CELLS)[:, None] // _POWERS[None, :]) % 5
  first: dict[str, int] = {}
  ids = np.empty(NUM_CELLS, np.int32)
  for index, row in enumerate(digits.tolist()):
    ids[index] = first.setdefault(_canonical(tuple(row)), index)
  ids.setflags(write=False)
  return ids
