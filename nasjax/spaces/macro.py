"""Chain-structured macro search spaces, including the NAS-RL convolutional space.

Zoph & Le, "Neural Architecture Search with Reinforcement Learning", ICLR 2017: a network is a sequence
of layers; for each layer the controller picks the filter height and width (1, 3, 5, 7), the number of
filters (24, 36, 48, 64), optionally the stride height and width (each 1, 2 or 3), and, through anchor
points, which earlier layers feed it (skip connections). :func:`nas_rl_space` is that space; :class:`MacroSpace` generalises it
with a layer type per layer (conv, pool, dense, identity -- the latter lets the effective depth vary),
in the spirit of the chain-structured spaces surveyed by Elsken, Metzen & Hutter, "Neural Architecture
Search: A Survey", JMLR 2019.

Encoding (``D = 5 L + L(L-1)/2`` with skips, ``5 L`` without): per layer
``[type, kernel_h, kernel_w, filters, stride]`` as indices into ``layer_types``, ``kernel_sizes``,
``kernel_sizes``, ``filters``, ``strides``; then, like the ENAS macro space, the skip bits of layer 1
``[from 0]``, layer 2 ``[from 0, from 1]``, ... A layer reads layer ``k - 1`` (the network input for
layer 0) concatenated, as in NAS-RL, with the layers its skip bits select.

With ``split_strides=True`` (NAS-RL's separate stride height and width; :func:`nas_rl_space` with
``with_strides=True``, registered as ``nas_rl_strided``) a layer has six fields, ``[type, kernel_h, kernel_w, filters, stride_h, stride_w]``,
both strides indexing ``strides`` (``D = 6 L + L(L-1)/2``). The first four fields keep their places, and a
space without the option keeps its five-field encoding, so existing encodings and strings stay valid.

Which hyperparameters a type uses:

=========  ========  ========  =======  ======
type       kernel_h  kernel_w  filters  stride
=========  ========  ========  =======  ======
conv       yes       yes       yes      yes
pool       yes       yes       --       yes
dense      --        --        yes      --      (``filters`` = units)
identity   --        --        --       --
=========  ========  ========  =======  ======

(split strides: ``stride_h`` and ``stride_w`` both follow the ``stride`` column.)

A hyperparameter the layer's type ignores keeps its slot in the array (the length is fixed) but must hold
index 0 in a valid encoding, so each architecture has exactly one encoding and strings round-trip. Hence:
sampling draws every decision uniformly and then zeroes the ignored ones; a mutation picks among the
decisions the current types use, and a type change also zeroes the fields the new type ignores (a field
the new type starts to use holds index 0); :meth:`~nasjax.spaces.base.Space.neighbors` keeps a
static K, so rows that change an ignored field come back equal to ``arch``.

String notation: one token per layer separated by ``|``; values, not indices::

  conv(h3,w5,f36,s1)<-0,2|pool(h3,w3,s2)|dense(f64)|identity<-1

``conv`` takes h, w, f, s; ``pool`` h, w, s; ``dense`` f; ``identity`` nothing (no parentheses). With split
strides ``s`` becomes ``sh`` (stride height) and ``sw`` (stride width), written like the kernel's ``h`` and
``w``: ``conv(h3,w5,f36,sh2,sw1)``, ``pool(h3,w3,sh1,sw2)``. Keys may come in any order, each once. ``<-`` lists skip sources (layer ``k`` accepts ``0..k-1``), omitted when
none. :meth:`MacroSpace.describe` gives the same per layer as dicts for a network builder.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.spaces.base import Arch, Space, require_str, shorten

LAYER_TYPES = ("conv", "pool", "dense", "identity")
_FIELDS = ("kernel_h", "kernel_w", "filters", "stride")
_KEYS = ("h", "w", "f", "s")
# Which of (kernel_h, kernel_w, filters, stride) each type uses.
_USES = {"conv": (1, 1, 1, 1), "pool": (1, 1, 0, 1), "dense": (0, 0, 1, 0), "identity": (0, 0, 0, 0)}
# Split strides: the one stride field becomes a height and a width, each used where the stride was.
_SPLIT_FIELDS = ("kernel_h", "kernel_w", "filters", "stride_h", "stride_w")
_SPLIT_KEYS = ("h", "w", "f", "sh", "sw")
_SPLIT_USES = {t: uses + uses[3:] for t, uses in _USES.items()}
_TOKEN_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^()]*)\))?\s*(?:<-(.*))?\Z", re.DOTALL)
_ARG_RE = re.compile(r"\s*([A-Za-z]+)\s*([0-9]+)\s*\Z")


def _as_tuple(space: str, field: str, values: Any) -> tuple:
  if isinstance(values, (str, bytes)):
    values = (values,)
  try:
    return tuple(values)
  except TypeError:
    raise NasjaxError(f"{space}: {field} must be a tuple; got {values!r}") from None


def _positive_ints(space: str, field: str, values: Any) -> tuple[int, ...]:
  values = _as_tuple(space, field, values)
  if (not values or len(set(values)) != len(values)
      or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)):
    raise NasjaxError(f"{space}: {field} must be a non-empty tuple of distinct positive integers; "
                      f"got {values}")
  return values


@dataclasses.dataclass(frozen=True)
class MacroSpace(Space):
  """A chain of ``num_layers`` typed layers with optional skip bits; see the module docstring."""

  num_layers: int
  layer_types: tuple[str, ...] = LAYER_TYPES
  kernel_sizes: tuple[int, ...] = (1, 3, 5, 7)
  filters: tuple[int, ...] = (24, 36, 48, 64)
  strides: tuple[int, ...] = (1, 2)
  skips: bool = True
  name: str = "macro"
  split_strides: bool = False

  def __post_init__(self):
    n = self.num_layers
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
      raise NasjaxError(f"{self.name}: num_layers must be a positive integer; got {n!r}")
    types = _as_tuple(self.name, "layer_types", self.layer_types)
    if not types or len(set(types)) != len(types) or any(t not in LAYER_TYPES for t in types):
      raise NasjaxError(f"{self.name}: layer_types must be distinct names from {LAYER_TYPES}; got {types}")
    object.__setattr__(self, "layer_types", types)
    object.__setattr__(self, "kernel_sizes", _positive_ints(self.name, "kernel_sizes", self.kernel_sizes))
    object.__setattr__(self, "filters", _positive_ints(self.name, "filters", self.filters))
    object.__setattr__(self, "strides", _positive_ints(self.name, "strides", self.strides))
    object.__setattr__(self, "skips", bool(self.skips))
    object.__setattr__(self, "split_strides", bool(self.split_strides))

  # ---------------------------------------------------------------------------------- layout
  @property
  def num_skip_bits(self) -> int:
    return self.num_layers * (self.num_layers - 1) // 2 if self.skips else 0

  @property
  def fields(self) -> tuple[str, ...]:
    """Names of a layer's hyperparameter fields, in encoding order after the type."""
    return _SPLIT_FIELDS if self.split_strides else _FIELDS

  @property
  def layer_width(self) -> int:
    """Decisions per layer: the type and its fields (5, or 6 with split strides)."""
    return 1 + len(self.fields)

  def field_index(self, k: int, field: str) -> int:
    """Position in the encoding of layer ``k``'s ``field`` ("type" or a name of :attr:`fields`)."""
    return self.layer_width * k + (0 if field == "type" else 1 + self.fields.index(field))

  @property
  def _keys(self) -> tuple[str, ...]:
    return _SPLIT_KEYS if self.split_strides else _KEYS

  @property
  def _uses_table(self) -> dict[str, tuple[int, ...]]:
    return _SPLIT_USES if self.split_strides else _USES

  @functools.cached_property
  def _field_values(self) -> tuple[tuple[int, ...], ...]:
    return (self.kernel_sizes, self.kernel_sizes, self.filters) + (self.strides,) * (len(self.fields) - 3)

  @functools.cached_property
  def num_choices(self) -> tuple[int, ...]:
    layer = (len(self.layer_types),) + tuple(len(v) for v in self._field_values)
    return layer * self.num_layers + (2,) * self.num_skip_bits

  def _skip_offset(self, k: int) -> int:
    return self.layer_width * self.num_layers + k * (k - 1) // 2

  @functools.cached_property
  def _uses(self) -> np.ndarray:
    """bool[num_types, num_fields]: which fields each of this space's types uses."""
    return np.asarray([self._uses_table[t] for t in self.layer_types], bool)

  @functools.cached_property
  def _decision_owner(self) -> tuple[tuple[int, str], ...]:
    out = [(k, f) for k in range(self.num_layers) for f in ("type",) + self.fields]
    for k in range(1, self.num_layers if self.skips else 0):
      out += [(k, f"skip from layer {j}") for j in range(k)]
    return tuple(out)

  @property
  def gene_groups(self) -> tuple[int, ...]:
    # A layer's type, hyperparameters and incoming skips travel together: the zero-fill rule holds.
    return tuple(k for k, _ in self._decision_owner)

  def decision_name(self, d: int) -> str:
    k, what = self._decision_owner[d]
    return f"layer {k} {what}"

  @property
  def size(self) -> int:
    """Exact count of valid (canonical) encodings: per layer, the sum over types of the product of the
    choices of the fields that type uses; times 2**(skip bits)."""
    per_layer = 0
    for t in self.layer_types:
      per_layer += math.prod(len(v) for v, used in zip(self._field_values, self._uses_table[t]) if used)
    return per_layer ** self.num_layers * 2 ** self.num_skip_bits

  # ---------------------------------------------------------------------------------- hooks
  def _used_fields(self, arch: Arch) -> jax.Array:
    """bool[D]: True for decisions the architecture's layer types use (types and skips always)."""
    w = self.layer_width
    layers = arch[:w * self.num_layers].reshape(self.num_layers, w)
    uses = jnp.asarray(self._uses)[layers[:, 0]]  # [L, num_fields]
    per_layer = jnp.concatenate([jnp.ones((self.num_layers, 1), bool), uses], axis=1).reshape(-1)
    return jnp.concatenate([per_layer, jnp.ones((self.num_skip_bits,), bool)])

  def _canonicalize(self, arch: Arch) -> Arch:
    return jnp.where(self._used_fields(arch), arch, 0).astype(jnp.int32)

  def _active(self, arch: Arch) -> jax.Array:
    return self._used_fields(arch) & jnp.asarray(np.asarray(self.num_choices) > 1)

  def _valid_extra(self, arch: Arch) -> jax.Array:
    return jnp.all(self._used_fields(arch) | (arch == 0))

  def _check_extra(self, arch: np.ndarray) -> None:
    w = self.layer_width
    layers = arch[:w * self.num_layers].reshape(self.num_layers, w)
    for k, row in enumerate(layers):
      t = self.layer_types[row[0]]
      for f, (field, used) in enumerate(zip(self.fields, self._uses_table[t])):
        if not used and row[1 + f] != 0:
          raise NasjaxError(f"{self.name}: layer {k} is {t!r}, which ignores {field}; the encoding must "
                            f"hold 0 there, got {row[1 + f]}")

  # ---------------------------------------------------------------------------------- views
  def skip_matrix(self, arch: Arch) -> jax.Array:
    """int32[L, L]: entry (k, j) is 1 when layer k also reads layer j < k (jittable)."""
    arch = jnp.asarray(arch, jnp.int32)
    out = jnp.zeros((self.num_layers, self.num_layers), jnp.int32)
    if not self.skips:
      return out
    rows, cols, idx = [], [], []
    for k in range(1, self.num_layers):
      for j in range(k):
        rows.append(k)
        cols.append(j)
        idx.append(self._skip_offset(k) + j)
    if not idx:
      return out
    return out.at[np.asarray(rows), np.asarray(cols)].set(arch[np.asarray(idx)])

  def describe(self, arch: Any) -> list[dict]:
    """Host side, per layer: ``{"type", "kernel": (h, w) | None, "filters": int | None,
    "stride": int | None, "skips": [sources]}``; None where the type ignores the hyperparameter. With
    split strides ``"stride"`` is ``(height, width) | None``, like ``"kernel"``."""
    a = self.check(arch)
    w = self.layer_width
    out = []
    for k in range(self.num_layers):
      t_idx, kh, kw, f, *s = (int(v) for v in a[w * k:w * k + w])
      t = self.layer_types[t_idx]
      uses = _USES[t]
      stride = tuple(self.strides[i] for i in s) if self.split_strides else self.strides[s[0]]
      out.append({
          "type": t,
          "kernel": (self.kernel_sizes[kh], self.kernel_sizes[kw]) if uses[0] else None,
          "filters": self.filters[f] if uses[2] else None,
          "stride": stride if uses[3] else None,
          "skips": [j for j in range(k) if self.skips and a[self._skip_offset(k) + j]],
      })
    return out

  # ---------------------------------------------------------------------------------- notation
  def _example(self) -> str:
    stride, pool_stride = ("sh1,sw1", "sh2,sw2") if self.split_strides else ("s1", "s2")
    parts = {"conv": f"conv(h3,w3,f36,{stride})", "pool": f"pool(h3,w3,{pool_stride})", "dense": "dense(f64)",
             "identity": "identity"}
    return "|".join(parts[t] for t in self.layer_types[:2]) + ("<-0" if self.skips else "")

  def to_string(self, arch: Any) -> str:
    tokens = []
    for layer in self.describe(arch):
      args = []
      if layer["kernel"] is not None:
        args += [f"h{layer['kernel'][0]}", f"w{layer['kernel'][1]}"]
      if layer["filters"] is not None:
        args.append(f"f{layer['filters']}")
      if layer["stride"] is not None:
        if self.split_strides:
          args += [f"sh{layer['stride'][0]}", f"sw{layer['stride'][1]}"]
        else:
          args.append(f"s{layer['stride']}")
      tok = layer["type"] + (f"({','.join(args)})" if args else "")
      if layer["skips"]:
        tok += "<-" + ",".join(map(str, layer["skips"]))
      tokens.append(tok)
    return "|".join(tokens)

  def from_string(self, s: str) -> np.ndarray:
    example = self._example()
    require_str(self.name, s, example)
    tokens = s.split("|")
    if len(tokens) != self.num_layers:
      raise NasjaxError(f"{self.name}: expected {self.num_layers} layers separated by '|', got "
                        f"{len(tokens)} in {shorten(s)!r}; e.g. {example!r}")
    out = np.zeros(self.num_decisions, np.int32)
    for k, tok in enumerate(tokens):
      m = _TOKEN_RE.match(tok)
      if m is None:
        raise NasjaxError(f"{self.name}: layer {k} token {shorten(tok)!r} is not 'type(args)<-sources'; "
                          f"e.g. {example!r}")
      t, args, skips = m.group(1), m.group(2), m.group(3)
      if t not in self.layer_types:
        raise NasjaxError(f"{self.name}: unknown layer type {shorten(t)!r} at layer {k}; accepted: "
                          f"{', '.join(self.layer_types)}")
      out[self.field_index(k, "type")] = self.layer_types.index(t)
      self._parse_args(k, t, args, out)
      if skips is not None:
        self._parse_skips(k, skips, out)
    return self.check(out)

  def _parse_args(self, k: int, t: str, args: str | None, out: np.ndarray) -> None:
    wanted = [key for key, used in zip(self._keys, self._uses_table[t]) if used]
    form = f"{t}(" + ",".join(f"{key}<value>" for key in wanted) + ")" if wanted else t
    if not wanted:
      if args is not None:
        raise NasjaxError(f"{self.name}: layer {k}: {t!r} takes no arguments; write just {t!r}")
      return
    if args is None:
      raise NasjaxError(f"{self.name}: layer {k}: {t!r} needs arguments, written {form}")
    given: dict[str, int] = {}
    for item in args.split(","):
      m = _ARG_RE.match(item)
      if m is None:
        raise NasjaxError(f"{self.name}: layer {k}: argument {shorten(item.strip())!r} is not "
                          f"<key><value>; write {form}")
      key, value_text = m.group(1), m.group(2)
      if key not in wanted:
        raise NasjaxError(f"{self.name}: layer {k}: {t!r} does not take {key!r}; write {form}")
      if key in given:
        raise NasjaxError(f"{self.name}: layer {k}: argument {key!r} given twice")
      given[key] = int(value_text) if len(value_text) <= 9 else -1
    missing = [key for key in wanted if key not in given]
    if missing:
      raise NasjaxError(f"{self.name}: layer {k}: {t!r} is missing {', '.join(missing)}; write {form}")
    for f, key in enumerate(self._keys):
      if key in given:
        values = self._field_values[f]
        if given[key] not in values:
          raise NasjaxError(f"{self.name}: layer {k}: {self.fields[f]} {shorten(str(given[key]))} is not "
                            f"offered; accepted: {', '.join(map(str, values))}")
        out[self.field_index(k, self.fields[f])] = values.index(given[key])

  def _parse_skips(self, k: int, skips: str, out: np.ndarray) -> None:
    if not self.skips:
      raise NasjaxError(f"{self.name}: this space has no skip connections; remove '<-{shorten(skips)}' "
                        f"from layer {k}")
    seen = set()
    for src_text in skips.split(","):
      src_text = src_text.strip()
      if not src_text.isascii() or not src_text.isdigit():
        raise NasjaxError(f"{self.name}: layer {k} skip source {shorten(src_text)!r} is not a layer "
                          "number; write e.g. '<-0,2'")
      src = int(src_text) if len(src_text) <= 6 else 10 ** 6
      if src >= k:
        raise NasjaxError(f"{self.name}: layer {k} cannot take a skip from layer {shorten(src_text)}"
                          + (" (layer 0 has no skip inputs)" if k == 0
                             else f"; accepted sources are 0..{k - 1}"))
      if src in seen:
        raise NasjaxError(f"{self.name}: layer {k} lists skip source {src} twice")
      seen.add(src)
      out[self._skip_offset(k) + src] = 1


def macro_space(num_layers: int = 8, **kwargs) -> MacroSpace:
  """The registry's ``"macro"``: a :class:`MacroSpace` with 8 layers unless told otherwise."""
  return MacroSpace(num_layers, **kwargs)


def nas_rl_space(num_layers: int = 15, with_strides: bool = False) -> MacroSpace:
  """NAS-RL (Zoph & Le 2017): every layer a conv with filter height and width in {1, 3, 5, 7}, filters in
  {24, 36, 48, 64}, and skip connections from any earlier layer. With ``with_strides`` a layer also picks
  its stride height and its stride width, each in {1, 2, 3}, as two decisions (the paper's controller
  emits them separately, figure 2): six fields per layer. Without, the stride is fixed to 1 and the layer
  keeps the five-field encoding of :class:`MacroSpace`. 15 layers by default, the depth of the paper's
  network without strides or pooling (Table 1).

  The strided space is named ``nas_rl_strided`` (the registry's name for it, see
  :func:`nas_rl_strided_space`): a space's name is how result files, resume identities and worker
  processes rebuild it with :func:`nasjax.spaces.get_space`, and the two encodings differ."""
  return MacroSpace(num_layers, layer_types=("conv",), kernel_sizes=(1, 3, 5, 7),
                    filters=(24, 36, 48, 64), strides=(1, 2, 3) if with_strides else (1,),
                    skips=True, name="nas_rl_strided" if with_strides else "nas_rl",
                    split_strides=bool(with_strides))


def nas_rl_strided_space(num_layers: int = 15) -> MacroSpace:
  """The registry's ``"nas_rl_strided"``: :func:`nas_rl_space` with ``with_strides=True``, NAS-RL's space
  with a stride height and a stride width per layer, so that a command line can name it
  (``nasjax search --method nasrl --space nas_rl_strided``)."""
  return nas_rl_space(num_layers, with_strides=True)
