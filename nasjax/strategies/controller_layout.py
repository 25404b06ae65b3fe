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
  ``sigmoid(v . tanh(W_key a_j + W_query h))`` from layer ``j``'s anchor and the current hidden state.

Masks make every sampled architecture valid, so its log-probability is exact (no repair step): a DARTS
node's second input excludes its first (``exclude_pos``), and a macro layer's hyperparameters that its type
ignores can only take index 0 (``type_pos`` / ``field``). The emission order puts what a mask reads first.

Emission orders: cells as ENAS micro (per node: both inputs, then both ops; the normal cell, then the
reduction cell); NB201 edge by edge; ENAS macro per layer its op, then its skip bits; macro chains (macro,
NAS-RL) per layer in NAS-RL's order, see :func:`_macro_layout`.
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
    return Layout(order, self.kind, self.group, self.num_choices, self.key_base, self.anchor_write, self.exclude_pos, self.type_pos, self.field, uses, tuple(self.groups),
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
      b.emit(in_a, POINTER, "input", key_base=base)
      b.emit(in_b, POINTER, "input", key_base=base, exclude_pos=in_a if space.distinct_inputs else -1)
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
      b.emit(space._skip_offset(k) + j, SKIP, "skip", key_base=j)  # noqa: SLF001
  return b.build(space.num_layers)


def _macro_layout(space) -> Layout:
  """Per layer: the type, the anchor point's skip bits, then filter height, filter width, stride height,
  stride width (or the one stride of a space without ``split_strides``) and number of filters.

  This is NAS-RL's order (Zoph & Le 2017): figure 2 has the controller predict a layer's filter height,
  filter width, stride height, stride width and number of filters, in that order, and figure 4 draws each
  layer's anchor point (the sigmoids choosing which earlier layers feed it) before its filter height. The
  layer's anchor is the hidden state at its type decision, emitted first because the fields' masks read it
  (NAS-RL's layers are all convolutions, so there the type is a one-choice step: the anchor point itself).
  Each skip bit of layer ``k`` from layer ``j`` is NAS-RL's ``sigmoid(v . tanh(W_prev h_j + W_curr h))``
  of layer ``j``'s anchor and the current hidden state; unlike the paper's single anchor step, each bit is
  its own step here, so the bits chosen so far are fed back before the next one.
  """
  b = _Builder(space.num_choices)
  fields = space.fields
  # Filter size, then strides, then filters (figure 2), whatever the fields' places in the encoding.
  emitted = [f for f in fields if f.startswith("kernel")] + [f for f in fields if f.startswith("stride")] + [
      "filters"]
  for k in range(space.num_layers):
    type_pos = space.field_index(k, "type")
    b.emit(type_pos, CHOICE, "type", anchor_write=k)
    for j in range(k if space.skips else 0):
      b.emit(space._skip_offset(k) + j, SKIP, "skip", key_base=j)  # noqa: SLF001
    for name in emitted:
      b.emit(space.field_index(k, name), CHOICE, name, type_pos=type_pos, field=fields.index(name))
  return b.build(space.num_layers, space._uses)  # noqa: SLF001


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
