"""Cell search spaces: DARTS, NASNet and ENAS micro share :class:`CellSpace`.

* DARTS -- Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019: 4 intermediate
  nodes, each summing 2 distinct inputs chosen from the 2 cell inputs and earlier nodes, each through one
  of 7 ops (8 candidates minus 'none', which a derived cell never uses); the cell output concatenates
  all 4 nodes.
* NASNet -- Zoph, Vasudevan, Shlens & Le, "Learning Transferable Architectures for Scalable Image
  Recognition", CVPR 2018: B = 5 nodes, 2 inputs each (the same input may be picked twice), 13 ops; the
  output concatenates the "loose ends", the nodes no other node reads. The paper's "identity" is called
  ``skip_connect`` here (``identity`` is accepted when parsing).
* ENAS micro -- Pham, Guan, Zoph, Le & Dean, "Efficient Neural Architecture Search via Parameter
  Sharing", ICML 2018: B nodes (5 by default), each picking 2 earlier nodes (repeats allowed) and 2 of 5
  ops (identity, sep 3x3, sep 5x5, avg pool, max pool); output = concat of loose ends.

Each space has a normal and a reduction cell. "Loose ends" are intermediate nodes only, as in the
genotypes DARTS transcribes; the ENAS code would also concatenate a cell input that no node reads.

Encoding (``D = 2 * num_nodes * 4``): for cell in (normal, reduce), for node ``i``:
``[input_a, op_a, input_b, op_b]``. An input of node ``i`` is in ``[0, i + 2)``: 0 and 1 are the cell
inputs (outputs of the two previous cells), ``k >= 2`` is intermediate node ``k - 2``. An op is an index
into ``space.ops``. The two inputs keep the order they are written in (no sorting), so a DARTS genotype
string round-trips exactly; the price is that swapping the two (input, op) halves of a node gives a
second encoding of the same cell, and :attr:`CellSpace.size` counts encodings, not cells.

With ``distinct_inputs`` (DARTS), ``input_a != input_b``:

* sampling draws ``input_b`` from the ``i + 1`` values other than ``input_a`` (uniform over valid pairs);
* a mutation (or neighbour) that sets one input equal to the other swaps the two inputs instead
  (ops stay with their slots), so it changes two decisions of one node. Consequently each node's
  "swap" neighbour appears twice in :meth:`neighbors`, once from each input slot.

Supernet view: ``supernet_ops = ('none',) + ops`` and ``num_edges = sum(i + 2)`` edges ordered by
destination node, then source (node 0: sources 0, 1; node 1: sources 0, 1, 2; ...): 14 for DARTS.
:meth:`CellSpace.edge_ops` maps an architecture to the op of every edge (0 = 'none' for unused edges).
A node reading the same input twice (NASNet, ENAS) has two ops on one edge, which ``edge_ops`` cannot
express (it keeps ``op_b``); :meth:`node_inputs` / :meth:`node_ops` describe every space exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.spaces.base import Arch, Space, require_str, shorten, uniform_ints
from nasjax.spaces.genotype import Genotype

DARTS_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5")
NASNET_OPS = ("skip_connect", "conv_3x1_1x3", "conv_7x1_1x7", "dil_conv_3x3", "avg_pool_3x3",
              "max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "conv_1x1", "conv_3x3", "sep_conv_3x3",
              "sep_conv_5x5", "sep_conv_7x7")
ENAS_MICRO_OPS = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
_IDENTITY_ALIAS = (("identity", "skip_connect"),)
_CELLS = ("normal", "reduce")
_SLOTS = ("input_a", "op_a", "input_b", "op_b")
_CONCAT_RULES = ("all", "loose_ends")


@dataclasses.dataclass(frozen=True, init=False)
class CellSpace(Space):
  """A normal + reduction cell pair; see the module docstring for the encoding.

  ``CellSpace(name, ops, num_nodes, distinct_inputs, concat)``: ``ops`` excludes 'none'; ``concat`` is
  ``"all"`` (output = every intermediate node) or ``"loose_ends"`` (nodes no other node reads), stored
  as :attr:`concat_rule` because :meth:`concat` computes the concat of an architecture. ``aliases`` maps
  extra op names accepted when parsing to names in ``ops``.
  """

  name: str
  ops: tuple[str, ...]
  num_nodes: int
  distinct_inputs: bool
  concat_rule: str
  aliases: tuple[tuple[str, str], ...]

  def __init__(self, name: str, ops: tuple[str, ...], num_nodes: int, distinct_inputs: bool,
               concat: str = "all", aliases: tuple[tuple[str, str], ...] = (), *,
               concat_rule: str | None = None):
    # concat_rule (the field's name) is accepted too, so dataclasses.replace works.
    concat = concat if concat_rule is None else concat_rule
    ops = tuple(ops)
    aliases = tuple((str(a), str(b)) for a, b in aliases)
    if not ops or len(set(ops)) != len(ops):
      raise NasjaxError(f"cell space {name!r}: ops must be a non-empty tuple of distinct names; got {ops}")
    if "none" in ops:
      raise NasjaxError(f"cell space {name!r}: ops lists the candidates of a derived cell, without "
                        "'none' (supernet_ops adds it)")
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 1:
      raise NasjaxError(f"cell space {name!r}: num_nodes must be a positive integer; got {num_nodes!r}")
    if concat not in _CONCAT_RULES:
      raise NasjaxError(f"cell space {name!r}: concat must be one of {_CONCAT_RULES}; got {concat!r}")
    for alias, target in aliases:
      if target not in ops:
        raise NasjaxError(f"cell space {name!r}: alias {alias!r} points to {target!r}, not in ops")
    object.__setattr__(self, "name", name)
    object.__setattr__(self, "ops", ops)
    object.__setattr__(self, "num_nodes", num_nodes)
    object.__setattr__(self, "distinct_inputs", bool(distinct_inputs))
    object.__setattr__(self, "concat_rule", concat)
    object.__setattr__(self, "aliases", aliases)

  # ---------------------------------------------------------------------------------- layout
  @functools.cached_property
  def num_choices(self) -> tuple[int, ...]:
    per_cell = []
    for i in range(self.num_nodes):
      per_cell += [i + 2, len(self.ops), i + 2, len(self.ops)]
    return tuple(per_cell * 2)

  @functools.cached_property
  def _slot_index(self) -> np.ndarray:
    """int32[2, num_nodes, 4]: position in the encoding of (cell, node, slot)."""
    return np.arange(2 * self.num_nodes * 4, dtype=np.int32).reshape(2, self.num_nodes, 4)

  @property
  def gene_groups(self) -> tuple[int, ...]:
    # One group per (cell, node): the node's inputs and ops stay together, so distinctness holds.
    return tuple(int(g) for g in np.repeat(np.arange(2 * self.num_nodes), 4))

  def decision_name(self, d: int) -> str:
    c, rest = divmod(d, self.num_nodes * 4)
    node, slot = divmod(rest, 4)
    return f"{_CELLS[c]} cell node {node} {_SLOTS[slot]}"

  @property
  def size(self) -> int:
    """Number of valid encodings: prod over 2 cells and nodes of (#ordered input pairs) * len(ops)**2,
    with (i+2)(i+1) ordered pairs for node i when inputs are distinct, (i+2)**2 otherwise."""
    per_cell = 1
    for i in range(self.num_nodes):
      pairs = (i + 2) * (i + 1) if self.distinct_inputs else (i + 2) ** 2
      per_cell *= pairs * len(self.ops) ** 2
    return per_cell ** 2

  @property
  def supernet_ops(self) -> tuple[str, ...]:
    return ("none",) + self.ops

  @property
  def num_edges(self) -> int:
    return sum(i + 2 for i in range(self.num_nodes))

  @functools.cached_property
  def _edge_offset(self) -> np.ndarray:
    return np.asarray([sum(j + 2 for j in range(i)) for i in range(self.num_nodes)], np.int32)

  # ---------------------------------------------------------------------------------- operators
  def sample(self, key: jax.Array) -> Arch:
    idx = self._slot_index
    maxval = np.asarray(self.num_choices, np.int32)
    if self.distinct_inputs:
      maxval[idx[..., 2].ravel()] -= 1
    raw = uniform_ints(key, (self.num_decisions,), maxval)
    if self.distinct_inputs:
      a, b = raw[idx[..., 0]], raw[idx[..., 2]]
      # Skipping over input_a makes b uniform over the other i + 1 inputs.
      raw = raw.at[idx[..., 2]].set(b + (b >= a).astype(jnp.int32))
    return raw

  @functools.cached_property
  def _partner(self) -> np.ndarray:
    """For each decision, the other input slot of its node (or itself for op slots)."""
    partner = np.arange(self.num_decisions, dtype=np.int32)
    idx = self._slot_index
    partner[idx[..., 0].ravel()] = idx[..., 2].ravel()
    partner[idx[..., 2].ravel()] = idx[..., 0].ravel()
    return partner

  def _fix_mutation(self, old: Arch, new: Arch, d: jax.Array) -> Arch:
    if not self.distinct_inputs:
      return new
    p = jnp.asarray(self._partner)[d]
    clash = (p != d) & (new[d] == new[p])
    # The partner takes the changed slot's old input: a swap, so both inputs stay valid and distinct.
    return new.at[p].set(jnp.where(clash, old[d], new[p]))

  def _valid_extra(self, arch: Arch) -> jax.Array:
    if not self.distinct_inputs:
      return jnp.bool_(True)
    idx = self._slot_index
    return jnp.all(arch[idx[..., 0]] != arch[idx[..., 2]])

  def _check_extra(self, arch: np.ndarray) -> None:
    if not self.distinct_inputs:
      return
    cells = arch.reshape(2, self.num_nodes, 4)
    for c in range(2):
      for i in range(self.num_nodes):
        if cells[c, i, 0] == cells[c, i, 2]:
          raise NasjaxError(f"{self.name}: {_CELLS[c]} cell node {i} reads input {cells[c, i, 0]} "
                            "twice; this space needs two distinct inputs per node")

  # ---------------------------------------------------------------------------------- views
  def node_inputs(self, arch: Arch) -> jax.Array:
    """int32[2, num_nodes, 2]: (input_a, input_b) of every node of (normal, reduce) (jittable)."""
    cells = jnp.asarray(arch, jnp.int32).reshape(2, self.num_nodes, 4)
    return cells[..., jnp.array([0, 2])]

  def node_ops(self, arch: Arch) -> jax.Array:
    """int32[2, num_nodes, 2]: (op_a, op_b) of every node, indices into ``ops`` (jittable)."""
    cells = jnp.asarray(arch, jnp.int32).reshape(2, self.num_nodes, 4)
    return cells[..., jnp.array([1, 3])]

  def edge_ops(self, arch: Arch) -> jax.Array:
    """int32[2, num_edges]: index into ``supernet_ops`` of every edge, 0 ('none') where unused.

    A node reading one input twice keeps ``op_b`` on that edge; use node_inputs/node_ops for those.
    """
    inputs, ops = self.node_inputs(arch), self.node_ops(arch)
    edge = jnp.asarray(self._edge_offset)[None, :, None] + inputs  # [2, N, 2]

    def one_cell(edge_c, ops_c):
      e = jnp.zeros((self.num_edges,), jnp.int32)
      # Two scatters, each with distinct indices, so a repeated edge deterministically keeps op_b.
      e = e.at[edge_c[:, 0]].set(ops_c[:, 0] + 1)
      return e.at[edge_c[:, 1]].set(ops_c[:, 1] + 1)

    return jax.vmap(one_cell)(edge, ops)

  def concat_mask(self, arch: Arch) -> jax.Array:
    """bool[2, num_nodes]: which intermediate nodes form the cell output (jittable)."""
    if self.concat_rule == "all":
      return jnp.ones((2, self.num_nodes), bool)
    inputs = self.node_inputs(arch).reshape(2, -1)
    used = jax.vmap(lambda ins: jnp.zeros((self.num_nodes + 2,), bool).at[ins].set(True))(inputs)
    return ~used[:, 2:]

  def concat(self, arch: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Host side: (normal_concat, reduce_concat) as node indices numbered from 2, as in DARTS."""
    return self._concat_np(self.check(arch))

  def _concat_np(self, a: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    cells = a.reshape(2, self.num_nodes, 4)
    out = []
    for c in range(2):
      if self.concat_rule == "all":
        out.append(tuple(range(2, self.num_nodes + 2)))
      else:
        used = set(int(v) for v in cells[c][:, [0, 2]].ravel())
        out.append(tuple(k for k in range(2, self.num_nodes + 2) if k not in used))
    return out[0], out[1]

  # ---------------------------------------------------------------------------------- genotypes
  def decode(self, arch: Any) -> Genotype:
    a = self.check(arch)
    cells = a.reshape(2, self.num_nodes, 4)
    entries = []
    for c in range(2):
      cell = []
      for ia, oa, ib, ob in cells[c]:
        cell += [(self.ops[oa], int(ia)), (self.ops[ob], int(ib))]
      entries.append(tuple(cell))
    normal_concat, reduce_concat = self._concat_np(a)
    return Genotype(entries[0], normal_concat, entries[1], reduce_concat)

  def encode(self, genotype: Genotype) -> np.ndarray:
    """Validates a genotype against this space and returns its encoding (np.int32[D])."""
    if not isinstance(genotype, Genotype):
      raise NasjaxError(f"{self.name}: expected a Genotype; got {type(genotype).__name__}")
    lookup = {op: k for k, op in enumerate(self.ops)}
    lookup.update({alias: self.ops.index(target) for alias, target in self.aliases})
    accepted = ", ".join(self.ops) + ("" if not self.aliases else
                                      " (aliases: " + ", ".join(f"{a}={t}" for a, t in self.aliases) + ")")
    out = np.zeros((2, self.num_nodes, 4), np.int32)
    for c, (entries, concat) in enumerate(((genotype.normal, genotype.normal_concat),
                                           (genotype.reduce, genotype.reduce_concat))):
      cell = _CELLS[c]
      if len(entries) != 2 * self.num_nodes:
        raise NasjaxError(f"{self.name}: the {cell} cell has {len(entries) // 2} nodes "
                          f"({len(entries)} entries); this space has {self.num_nodes} nodes "
                          f"({2 * self.num_nodes} entries, 2 per node)")
      for k, (op, inp) in enumerate(entries):
        i, half = divmod(k, 2)
        if op == "none":
          raise NasjaxError(f"{self.name}: {cell} cell node {i} uses op 'none', which a derived cell "
                            f"never contains; accepted ops: {accepted}")
        if op not in lookup:
          raise NasjaxError(f"{self.name}: unknown op {shorten(op)!r} in the {cell} cell (node {i}); "
                            f"accepted ops: {accepted}")
        if not 0 <= inp < i + 2:
          raise NasjaxError(f"{self.name}: {cell} cell node {i} (index {i + 2}) takes input {inp}, but "
                            f"node {i} can only read 0..{i + 1} (0, 1 = cell inputs, k >= 2 = earlier "
                            "node k)")
        out[c, i, 2 * half] = inp
        out[c, i, 2 * half + 1] = lookup[op]
    arch = self.check(out.ravel())
    for c, given in enumerate((genotype.normal_concat, genotype.reduce_concat)):
      want = self._concat_np(arch)[c]
      if tuple(sorted(given)) != want:
        rule = ("all intermediate nodes" if self.concat_rule == "all"
                else "the loose ends (nodes no other node reads)")
        raise NasjaxError(f"{self.name}: {_CELLS[c]}_concat is {list(given)}, but this space "
                          f"concatenates {rule}, which for this cell is {list(want)}")
    return arch

  def to_string(self, arch: Any) -> str:
    return self.decode(arch).to_string()

  def from_string(self, s: str) -> np.ndarray:
    require_str(self.name, s, "Genotype(normal=[...], normal_concat=[...], reduce=[...], "
                "reduce_concat=[...])")
    return self.encode(Genotype.from_string(s))

  def to_json(self, arch: Any) -> dict:
    out = super().to_json(arch)
    out["genotype"] = self.decode(arch).to_json()
    return out

  def _extra_json_keys(self) -> tuple[str, ...]:
    return ("genotype",)

  def _from_extra_json(self, data: Mapping) -> list[tuple[str, np.ndarray]]:
    if "genotype" not in data:
      return []
    return [("genotype", self.encode(Genotype.from_json(data["genotype"])))]


def darts_space() -> CellSpace:
  """DARTS (Liu et al. 2019): 4 nodes, 7 ops, distinct inputs, concat of all nodes."""
  return CellSpace("darts", DARTS_OPS, 4, True, "all")


def nasnet_space() -> CellSpace:
  """NASNet (Zoph et al. 2018): B = 5 nodes, 13 ops, inputs may repeat, concat of loose ends."""
  return CellSpace("nasnet", NASNET_OPS, 5, False, "loose_ends", _IDENTITY_ALIAS)


def enas_micro_space(num_nodes: int = 5) -> CellSpace:
  """ENAS micro (Pham et al. 2018): B nodes, 5 ops, inputs may repeat, concat of loose ends."""
  return CellSpace("enas_micro", ENAS_MICRO_OPS, num_nodes, False, "loose_ends", _IDENTITY_ALIAS)

