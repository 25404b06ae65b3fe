"""How an autoregressive controller reads a search space: the order it emits the decisions in, what kind of
decision each one is, and which choices the decisions already made rule out.

An RNN controller (Zoph & Le, "Neural Architecture Search with Reinforcement Learning", ICLR 2017; Pham et
al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018) emits an architecture one
decision at a time. Three kinds of decision cover every registered space:

* ``CHOICE``: a categorical value (an op, a kernel size, a layer type) from a softmax head; decisions of one
  ``group`` (e.g. every op of a cell) share the head and the embedding that feeds the chosen value back.
* ``POINTER``: which earlier node feeds a cell node (ENAS micro, DARTS, NASNet): attention over the
  *anchors* (the controller's hidden state when each candidate node was emitted), choice ``j`` pointing at
  anchor ``key_base + j``.
* ``SKIP``: one skip-connection bit from layer ``j`` into layer ``k`` (NAS-RL's anchor points, ENAS macro):
  ``sigmoid(v . tanh(W_key a_j + W_query a_k))`` from the two layers' anchors.

Masks make every sampled architecture valid, so its log-probability is exact (no repair step): a DARTS
node's second input excludes its first (``exclude_pos``), and a macro layer's hyperparameters that its type
ignores can only take index 0 (``type_pos`` / ``field``). The emission order puts what a mask reads first.

Emission orders: cells as ENAS micro (per node: both inputs, then both ops; the normal cell, then the
reduction cell); NB201 edge by edge; ENAS macro per layer its op, then its skip bits; macro chains per layer
the type, filter height and width, stride, number of filters (NAS-RL's per-layer order), then the layer's
skip bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nasjax.errors import NasjaxError

CHOICE, POINTER, SKIP = 0, 1, 2


class Layout(NamedTuple):
  """Static description of a space for the controller; arrays are indexed by decision (not emission step)."""
  order: np.ndarray          # int32[D]: the decision emitted at step t
  kind: np.ndarray           # int32[D]: CHOICE, POINTER or SKIP
  group: np.ndarray          # int32[D]: head / embedding group (CHOICE and SKIP)
  num_choices: np.ndarray    # int32[D]
  key_base: np.ndarray       # int32[D]: POINTER: anchor of choice 0; SKIP: the source layer's anchor
  query_anchor: np.ndarray   # int32[D]: SKIP: the receiving layer's anchor; else -1
  anchor_write: np.ndarray   # int32[D]: anchor this decision's hidden state becomes, or -1
  exclude_pos: np.ndarray    # int32[D]: decision whose value this one may not take, or -1
  type_pos: np.ndarray       # int32[D]: the layer-type decision gating this field, or -1
  field: np.ndarray          # int32[D]: column of ``uses`` for a gated field
  uses: np.ndarray           # bool[num types, num fields]: which fields each layer type uses
  group_names: tuple[str, ...]
  num_anchors: int

  @property
  def width(self) -> int:
    return int(max(self.num_choices.max(), 2))

  @property
  def num_decisions(self) -> int:
    return int(self.order.shape[0])


class _Builder:
  def __init__(self, num_choices):
    d = len(num_choices)
    self.num_choices = np.asarray(num_choices, np.int32)
    self.kind = np.zeros(d, np.int32)
    self.group = np.zeros(d, np.int32)
    self.key_base = np.zeros(d, np.int32)
    self.query_anchor = np.full(d, -1, np.int32)
    self.anchor_write = np.full(d, -1, np.int32)
    self.exclude_pos = np.full(d, -1, np.int32)
    self.type_pos = np.full(d, -1, np.int32)
    self.field = np.zeros(d, np.int32)
    self.order: list[int] = []
    self.groups: list[str] = []

  def group_id(self, name: str) -> int:
    if name not in self.groups:
      self.groups.append(name)
    return self.groups.index(name)

  def emit(self, d: int, kind: int = CHOICE, group: str | None = None, **fields) -> None:
    self.order.append(d)
    self.kind[d] = kind
    if group is not None:
      self.group[d] = self.group_id(group)
    for name, value in fields.items():
      getattr(self, name)[d] = value

  def build(self, num_anchors: int, uses=None) -> Layout:
    order = np.asarray(self.order, np.int32)
    if sorted(order.tolist()) != list(range(len(self.num_choices))):
      raise AssertionError("a controller layout must emit every decision exactly once")
    uses = np.ones((1, 1), bool) if uses is None else np.asarray(uses, bool)
    return Layout(order, self.kind, self.group, self.num_choices, self.key_base, self.query_anchor,
                  self.anchor_write, self.exclude_pos, self.type_pos, self.field, uses, tuple(self.groups),
                  max(int(num_anchors), 1))


def _cell_layout(space) -> Layout:
  b = _Builder(space.num_choices)
  n = space.num_nodes
  per_cell = n + 2  # anchors: the two cell inputs, then one per node
  slot = space._slot_index  # noqa: SLF001 -- (cell, node, slot) -> decision
  for c in range(2):
    for i in range(n):
      in_a, op_a, in_b, op_b = (int(v) for v in slot[c, i])
      base = c * per_cell
      b.emit(in_a, POINTER, key_base=base)
      b.emit(in_b, POINTER, key_base=base, exclude_pos=in_a if space.distinct_inputs else -1)
      b.emit(op_a, CHOICE, "op")
      b.emit(op_b, CHOICE, "op", anchor_write=base + 2 + i)
  return b.build(2 * per_cell)


def _nb201_layout(space) -> Layout:
  b = _Builder(space.num_choices)
  for d in range(space.num_decisions):
    b.emit(d, CHOICE, "op")
  return b.build(1)


def _enas_macro_layout(space) -> Layout:
  b = _Builder(space.num_choices)
  for k in range(space.num_layers):
    b.emit(k, CHOICE, "op", anchor_write=k)
    for j in range(k):
      b.emit(space._skip_offset(k) + j, SKIP, "skip", key_base=j, query_anchor=k)  # noqa: SLF001
  return b.build(space.num_layers)


def _macro_layout(space) -> Layout:
  from nasjax.spaces.macro import _USES  # noqa: PLC0415 -- the table lives with the space

  b = _Builder(space.num_choices)
  names = ("kernel_h", "kernel_w", "filters", "stride")
  uses = np.asarray([_USES[t] for t in space.layer_types], bool)
  for k in range(space.num_layers):
    base = 5 * k
    b.emit(base, CHOICE, "type")
    for f in (0, 1, 3, 2):  # height, width, stride, filters: NAS-RL's order within a layer
      b.emit(base + 1 + f, CHOICE, names[f], type_pos=base, field=f,
             anchor_write=k if f == 2 else -1)
    for j in range(k if space.skips else 0):
      b.emit(space._skip_offset(k) + j, SKIP, "skip", key_base=j, query_anchor=k)  # noqa: SLF001
  return b.build(space.num_layers, uses)


def controller_layout(space) -> Layout:
  """The :class:`Layout` of a registered space (cells, NB201, ENAS macro, macro / NAS-RL)."""
  from nasjax.spaces import CellSpace, EnasMacroSpace, MacroSpace, NB201Space  # noqa: PLC0415

  if isinstance(space, CellSpace):
    return _cell_layout(space)
  if isinstance(space, NB201Space):
    return _nb201_layout(space)
  if isinstance(space, EnasMacroSpace):
    return _enas_macro_layout(space)
  if isinstance(space, MacroSpace):
    return _macro_layout(space)
  raise NasjaxError(f"the controller has no layout for space {getattr(space, 'name', type(space).__name__)!r}; "
                    "it knows cell spaces (darts, nasnet, enas_micro), nb201, enas_macro and macro / nas_rl")
