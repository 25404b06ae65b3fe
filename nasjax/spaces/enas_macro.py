"""ENAS macro (whole-network) search space.

Pham, Guan, Zoph, Le & Dean, "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018,
section 2.3: a chain of L layers (L = 12 in the paper); layer ``k`` applies one of 6 ops (conv 3x3,
conv 5x5, separable conv 3x3 and 5x5, avg pool 3x3, max pool 3x3) to layer ``k - 1``'s output and may add
skip connections from any of layers ``0..k-1`` (one bit each: 66 bits for 12 layers). As in the authors'
code, the skip sources are summed with the op's output.

Encoding (``D = L + L(L-1)/2``): the L op indices (into :data:`ENAS_MACRO_OPS`, whose order differs from
the numbering of the authors' ``fixed_arc`` strings), then the skip bits of layer 1 ``[from 0]``, layer 2
``[from 0, from 1]``, ..., layer L-1 ``[from 0, ..., from L-2]``. Every encoding is valid, so the size
is ``6**L * 2**(L(L-1)/2)``.

String notation: one token per layer, separated by ``|``; a token is the op name, followed by ``<-`` and
the comma-separated skip sources when the layer has any, e.g. for 3 layers
``conv_3x3|sep_conv_5x5<-0|max_pool_3x3<-0,1``. Spaces around tokens and sources are ignored; sources
may come in any order but not twice, and layer ``k`` accepts sources ``0..k-1`` only.
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

ENAS_MACRO_OPS = ("conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
_TOKEN_RE = re.compile(r"\s*([A-Za-z0-9_]+)\s*(?:<-(.*))?\Z", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class EnasMacroSpace(Space):
  """``num_layers`` layers, 6 ops each, lower-triangular skip bits; see the module docstring."""

  num_layers: int = 12
  name: str = "enas_macro"

  ops = ENAS_MACRO_OPS

  def __post_init__(self):
    if not isinstance(self.num_layers, int) or isinstance(self.num_layers, bool) or self.num_layers < 1:
      raise NasjaxError(f"enas_macro: num_layers must be a positive integer; got {self.num_layers!r}")

  @property
  def num_skip_bits(self) -> int:
    return self.num_layers * (self.num_layers - 1) // 2

  @functools.cached_property
  def num_choices(self) -> tuple[int, ...]:
    return (len(ENAS_MACRO_OPS),) * self.num_layers + (2,) * self.num_skip_bits

  def _skip_offset(self, k: int) -> int:
    return self.num_layers + k * (k - 1) // 2

  @functools.cached_property
  def _layer_of_decision(self) -> tuple[tuple[int, int], ...]:
    """(layer, -1) for an op decision, (layer, source) for a skip bit."""
    out = [(k, -1) for k in range(self.num_layers)]
    for k in range(1, self.num_layers):
      out += [(k, j) for j in range(k)]
    return tuple(out)

  @property
  def gene_groups(self) -> tuple[int, ...]:
    # A layer's op and its incoming skips travel together in crossover.
    return tuple(k for k, _ in self._layer_of_decision)

  def decision_name(self, d: int) -> str:
    k, j = self._layer_of_decision[d]
    return f"layer {k} op" if j < 0 else f"layer {k} skip from layer {j}"

  @functools.cached_property
  def _skip_gather(self) -> tuple[np.ndarray, np.ndarray]:
    """Index into the encoding of bit (k, j) for j < k, and the lower-triangle mask."""
    idx = np.zeros((self.num_layers, self.num_layers), np.int32)
    mask = np.zeros((self.num_layers, self.num_layers), bool)
    for k in range(1, self.num_layers):
      for j in range(k):
        idx[k, j] = self._skip_offset(k) + j
        mask[k, j] = True
    return idx, mask

  def layer_ops(self, arch: Arch) -> jax.Array:
    """int32[L]: op index of every layer (jittable)."""
    return jnp.asarray(arch, jnp.int32)[:self.num_layers]

  def skip_matrix(self, arch: Arch) -> jax.Array:
    """int32[L, L]: entry (k, j) is 1 when layer k adds a skip from layer j < k (jittable)."""
    idx, mask = self._skip_gather
    arch = jnp.asarray(arch, jnp.int32)
    return jnp.where(jnp.asarray(mask), arch[jnp.asarray(idx)], 0).astype(jnp.int32)

  def describe(self, arch: Any) -> list[dict]:
    """Host side: ``[{"op": name, "skips": [sources]}, ...]`` per layer."""
    a = self.check(arch)
    return [{"op": ENAS_MACRO_OPS[a[k]],
             "skips": [j for j in range(k) if a[self._skip_offset(k) + j]]}
            for k in range(self.num_layers)]

  def to_string(self, arch: Any) -> str:
    tokens = []
    for layer in self.describe(arch):
      skips = layer["skips"]
      tokens.append(layer["op"] + ("<-" + ",".join(map(str, skips)) if skips else ""))
    return "|".join(tokens)

  def from_string(self, s: str) -> np.ndarray:
    example = "conv_3x3|sep_conv_5x5<-0|max_pool_3x3<-0,1"
    require_str(self.name, s, example)
    tokens = s.split("|")
    if len(tokens) != self.num_layers:
      raise NasjaxError(f"{self.name}: expected {self.num_layers} layers separated by '|', got "
                        f"{len(tokens)} in {shorten(s)!r}; format: op or op<-sources per layer, e.g. "
                        f"{example!r}")
    out = np.zeros(self.num_decisions, np.int32)
    for k, tok in enumerate(tokens):
      m = _TOKEN_RE.match(tok)
      if m is None:
        raise NasjaxError(f"{self.name}: layer {k} token {shorten(tok)!r} is not 'op' or "
                          f"'op<-source,...'; e.g. {example!r}")
      op, skips = m.group(1), m.group(2)
      if op not in ENAS_MACRO_OPS:
        raise NasjaxError(f"{self.name}: unknown op {shorten(op)!r} at layer {k}; accepted ops: "
                          f"{', '.join(ENAS_MACRO_OPS)}")
      out[k] = ENAS_MACRO_OPS.index(op)
      if skips is None:
        continue
      seen = set()
      for src_text in skips.split(","):
        src_text = src_text.strip()
        if not src_text.isdigit() or not src_text.isascii():
          raise NasjaxError(f"{self.name}: layer {k} skip source {shorten(src_text)!r} is not a "
                            "layer number; write e.g. 'conv_3x3<-0,2'")
        src = int(src_text) if len(src_text) <= 6 else 10 ** 6
        if src >= k:
          raise NasjaxError(f"{self.name}: layer {k} cannot take a skip from layer {shorten(src_text)}"
                            + (" (layer 0 has no skip inputs)" if k == 0
                               else f"; accepted sources are 0..{k - 1}"))
        if src in seen:
          raise NasjaxError(f"{self.name}: layer {k} lists skip source {src} twice")
        seen.add(src)
        out[self._skip_offset(k) + src] = 1
    return self.check(out)
