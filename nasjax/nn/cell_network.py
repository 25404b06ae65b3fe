"""The shared cell network of ENAS micro: one set of weights, any architecture of a cell space, exactly.

Pham, Guan, Zoph, Le & Dean, "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018
(the convolutional-cell, "micro", search space): every architecture of the space is a path through one
network whose weights all architectures share; node ``i`` of a cell is ``op_a(input_a) + op_b(input_b)``
with both inputs and both ops chosen by the architecture, and the cell output concatenates the loose
ends (the nodes no other node reads). :class:`SharedCellNetwork` does this for any
:class:`~nasjax.spaces.cells.CellSpace` (DARTS, NASNet, ENAS micro) with the space's own encoding as the
architecture, passed as data: one compiled program serves every architecture.

Unlike the edge supernet (:class:`~nasjax.nn.supernet.Supernet`), whose discrete path takes one op per
edge (source, destination) and always concatenates every node, this network computes each node's two
slots separately, so a node that reads one input twice (NASNet, ENAS) applies both of its ops, and its
output is exactly the cell the genotype describes:

* **Inputs by index.** A cell's states (its two preprocessed inputs, then its nodes) are one stacked
  buffer; each slot reads ``states[input]`` with the index as data, and its op is a ``lax.switch`` over
  the space's ops, so only the chosen op of each slot is computed (and only its parameters get a nonzero
  gradient). The slots run in node order as the steps of one scan (:class:`~nasjax.nn.supernet.EdgeStack`
  with data-dependent sources), so a cell compiles one slot per kind, whatever the number of nodes.
* **Reduction cells.** As in the discrete :class:`~nasjax.nn.network.Network`, an op on a cell input has
  stride 2 and an op on an earlier node stride 1. Each slot therefore has two op sets, one run over the
  cell inputs and one over the nodes; the set the slot does not use computes the parameter-free ``none``.
* **Variable concatenation with static shapes.** The cell output always has ``num_nodes * C`` channels:
  the nodes outside the concatenation are multiplied by 0. Everything that reads a cell output starts
  with a 1x1 convolution (the next cells' preprocessing, a factorized reduction) or a linear map (the
  classifier) after a ReLU or the global mean, and ReLU(0) = mean(0) = 0, so this equals the
  concatenation of the chosen nodes followed by that 1x1 convolution with only the chosen nodes' weight
  rows. ENAS does the same with its ``final_conv``, whose weight rows it gathers by the loose ends' indices.

Weight sharing. Weights belong to (cell, node, slot, op), plus the stride for a reduction cell's slots,
and are shared by every input a slot may read. ENAS's code shares less: it indexes its weights by the
input as well (a leading axis over the possible inputs of the node, gathered by the chosen one), so each
(layer, node, slot, op) has one weight set per possible input. The DARTS edge supernet keeps one set per
(cell, edge = (input, node), op), whichever of the node's two slots reads that input.

Placement of the reduction cells: at 1/3 and 2/3 of ``layers`` (DARTS, NASNet), as the retraining
``Network`` places them, rather than ENAS's ``N`` normal cells between reductions that factorise the
previous output first. No pool is followed by a BatchNorm (the DARTS supernet adds one to scale the
mixture; a discrete path has none) and no drop-path is applied, so for a fixed architecture this network
is the genotype's ``Network`` (without auxiliary head) up to the parameterisation above.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.ops import Impl, batch_norm, conv, preprocess_cell_inputs
from nasjax.nn.supernet import EdgeStack, reduction_layers

CONCAT_RULES = ("all", "loose_ends")


def edge_supernet_is_exact(space) -> bool:
  """Whether the edge supernet's discrete path (``space.edge_ops``) is every architecture of ``space``
  exactly: distinct inputs per node and the concatenation of all nodes (DARTS). NASNet and ENAS micro,
  whose nodes may read one input twice and whose cells concatenate their loose ends, need
  :class:`SharedCellNetwork`."""
  return bool(getattr(space, "distinct_inputs", False)) and getattr(space, "concat_rule", None) == "all"


def concat_mask(cell_arch: jax.Array, num_nodes: int, concat: str) -> jax.Array:
  """bool[num_nodes]: the nodes a cell's output concatenates, from its int32[num_nodes, 4] encoding."""
  if concat == "all":
    return jnp.ones((num_nodes,), bool)
  read = jnp.zeros((num_nodes + 2,), bool).at[cell_arch[:, jnp.array([0, 2])].reshape(-1)].set(True)
  return ~read[2:]


class SharedCell(nn.Module):
  """One cell: node ``i = op_a(states[input_a]) + op_b(states[input_b])``; see the module docstring.

  ``ops`` are the candidates with ``none`` first (index 0, for the slots a reduction cell's op set does
  not use); the cell's encoding holds indices into ``ops[1:]``.
  """
  ops: tuple[str, ...]
  num_nodes: int
  concat: str
  channels: int
  reduction: bool
  reduction_prev: bool
  affine: bool = True
  impl: Impl = Impl()
  remat: bool = False

  def _slots(self, name: str, stride: int, num_edges: int) -> EdgeStack:
    return EdgeStack(self.ops, self.channels, stride, self.affine, self.impl, 1, num_edges, edge_loop="scan",
                     remat=self.remat, pool_bn=False, name=name)

  @nn.compact
  def __call__(self, s0, s1, cell_arch, train: bool):
    n, c = self.num_nodes, self.channels
    s0, s1 = preprocess_cell_inputs(s0, s1, c, self.reduction_prev, self.affine, train)
    # Slot order: node 0 slot a, node 0 slot b, node 1 slot a, ...: a node is complete before any later
    # node reads it.
    inputs = cell_arch[:, jnp.array([0, 2])].reshape(-1)
    ops = cell_arch[:, jnp.array([1, 3])].reshape(-1) + 1
    targets = np.repeat(np.arange(n, dtype=np.int32), 2)
    if not self.reduction:
      states = jnp.concatenate([jnp.stack([s0, s1]), jnp.zeros((n, *s1.shape), s1.dtype)])
      states = self._slots("slots", 1, 2 * n)(None, states, inputs, targets + 2, ops, "discrete", train)
      nodes = states[2:]
    else:
      batch, height, width, _ = s1.shape
      nodes = jnp.zeros((n, batch, -(-height // 2), -(-width // 2), c), s1.dtype)
      from_input = inputs < 2
      nodes = self._slots("input_slots", 2, 2 * n)(
          jnp.stack([s0, s1]), nodes, jnp.where(from_input, inputs, 0), targets, jnp.where(from_input, ops, 0),
          "discrete", train)
      if n > 1:  # node 0 reads cell inputs only
        nodes = self._slots("node_slots", 1, 2 * n - 2)(
            None, nodes, jnp.where(from_input, 0, inputs - 2)[2:], targets[2:], jnp.where(from_input, 0, ops)[2:],
            "discrete", train)
    mask = concat_mask(cell_arch, n, self.concat).astype(nodes.dtype)
    return jnp.concatenate(list(nodes * mask[:, None, None, None, None]), axis=-1)


class SharedCellNetwork(nn.Module):
  """ENAS's shared network of a cell space: stem, ``layers`` cells (reductions at 1/3 and 2/3), classifier.

  ``net.apply(variables, x, arch, train=...)`` with ``arch`` the space's int32[2 * num_nodes * 4] encoding
  (``[input_a, op_a, input_b, op_b]`` per node, normal cell then reduction cell) as data: changing it
  never retraces. Variables are ``{"params", "batch_stats"}``; in training mode pass
  ``mutable=["batch_stats"]``.

  Attributes:
    ops: the space's candidate ops (without ``none``).
    num_nodes: intermediate nodes per cell.
    concat: ``"loose_ends"`` (NASNet, ENAS) or ``"all"`` (DARTS).
    channels, layers, num_classes, stem_multiplier: as :class:`~nasjax.nn.network.Network`.
    affine: BatchNorm scale and offset in the cells (the ``Network`` has them).
    impl: how the ops are written (:class:`~nasjax.nn.ops.Impl`).
    remat_edges: recompute each slot's forward in the backward pass instead of storing its activations
      (as the edge supernet's ``remat_edges``).
  """
  ops: tuple[str, ...]
  num_nodes: int
  concat: str = "loose_ends"
  channels: int = 16
  layers: int = 8
  num_classes: int = 10
  stem_multiplier: int = 3
  affine: bool = True
  impl: Impl = Impl()
  remat_edges: bool = True

  @classmethod
  def for_space(cls, space, **kwargs) -> "SharedCellNetwork":
    """The shared network of a cell space (one with ``ops``, ``num_nodes`` and ``concat_rule``); keyword
    arguments set the other fields (or override the space's, e.g. ``concat="all"``)."""
    missing = [a for a in ("ops", "num_nodes", "concat_rule") if not hasattr(space, a)]
    if missing:
      raise NasjaxError(f"SharedCellNetwork needs a cell space (darts, nasnet, enas_micro); "
                        f"{getattr(space, 'name', type(space).__name__)!r} has no {', '.join(missing)}")
    fields = dict(ops=tuple(space.ops), num_nodes=space.num_nodes, concat=space.concat_rule)
    return cls(**{**fields, **kwargs})

  @property
  def num_decisions(self) -> int:
    return 2 * self.num_nodes * 4

  def check_arch(self, arch) -> jax.Array:
    """``arch`` as int32[D], refusing a wrong shape or dtype; concrete values are range-checked too (under
    ``jit`` they are data, valid when they come from the space)."""
    arch = jnp.asarray(arch)
    if arch.shape != (self.num_decisions,) or not jnp.issubdtype(arch.dtype, jnp.integer):
      raise NasjaxError(f"architecture must be the space's int32[{self.num_decisions}] encoding "
                        f"([input_a, op_a, input_b, op_b] per node, {self.num_nodes} nodes, normal then "
                        f"reduce); got {arch.dtype} {arch.shape}")
    if not isinstance(arch, jax.core.Tracer):
      cells = np.asarray(arch).reshape(2, self.num_nodes, 4)
      limit = np.arange(self.num_nodes)[None, :, None] + 2
      bad_inputs = (cells[..., [0, 2]] < 0) | (cells[..., [0, 2]] >= limit)
      bad_ops = (cells[..., [1, 3]] < 0) | (cells[..., [1, 3]] >= len(self.ops))
      if bad_inputs.any() or bad_ops.any():
        c, i, _ = np.argwhere(bad_inputs | bad_ops)[0]
        raise NasjaxError(f"architecture out of range: {('normal', 'reduce')[c]} cell node {i} is "
                          f"{cells[c, i].tolist()}; node {i} reads inputs 0..{i + 1} and ops are "
                          f"0..{len(self.ops) - 1}")
    return arch.astype(jnp.int32)

  @nn.compact
  def __call__(self, x, arch, train: bool = False):
    if x.ndim != 4:
      raise NasjaxError(f"network input must be NHWC (4-D), got shape {x.shape}")
    if self.concat not in CONCAT_RULES:
      raise NasjaxError(f"concat must be one of {CONCAT_RULES}; got {self.concat!r}")
    if self.layers < 1 or self.channels < 2 or self.channels % 2:
      raise NasjaxError(f"need layers >= 1 and an even channel count >= 2, got layers={self.layers}, "
                        f"channels={self.channels}")
    cells = self.check_arch(arch).reshape(2, self.num_nodes, 4)
    c = self.channels
    s = batch_norm(train, True, name="stem_bn")(conv(self.stem_multiplier * c, (3, 3), name="stem_conv")(x))
    s0 = s1 = s
    reductions = reduction_layers(self.layers)
    reduction_prev = False
    ops = ("none",) + tuple(self.ops)
    for i in range(self.layers):
      reduction = i in reductions
      c = c * 2 if reduction else c
      cell = SharedCell(ops, self.num_nodes, self.concat, c, reduction, reduction_prev, self.affine, self.impl,
                        self.remat_edges, name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, cells[int(reduction)], train)
      reduction_prev = reduction
    return nn.Dense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
