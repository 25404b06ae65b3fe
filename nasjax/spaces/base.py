"""The common machinery of every search space: an architecture is a fixed-length int32 vector.

An architecture (``Arch``) is ``int32[D]``: decision ``d`` takes a value in ``[0, num_choices[d])``.
A population is then ``int32[P, D]`` and every operator below is a pure jnp/lax function of keys and
arrays, so search strategies ``jax.vmap`` and ``jax.jit`` it (spaces are frozen, hashable dataclasses,
usable as static arguments). Representing architectures as fixed-length discrete vectors, with
mutation as "resample one decision", follows regularized evolution (Real et al., "Regularized Evolution
for Image Classifier Architecture Search", AAAI 2019) and the NAS-Bench encodings (Ying et al.,
"NAS-Bench-101", ICML 2019; Dong & Yang, "NAS-Bench-201", ICLR 2020).

:class:`Space` implements the generic operators from ``num_choices``; a space with constraints overrides
a few hooks:

* ``_canonicalize(arch)`` (jittable): map an in-range vector to the valid one it stands for
  (e.g. zero a field its layer ignores). Used after sampling and crossover.
* ``_fix_mutation(old, new, d)`` (jittable): repair ``new``, which is ``old`` with decision ``d`` changed.
  Defaults to ``_canonicalize(new)``.
* ``_active(arch)`` (jittable): which decisions a mutation may change (default: those with >1 choice).
* ``_valid_extra(arch)`` (jittable) and ``_check_extra(arch_np)`` (host, raises NasjaxError): constraints
  beyond the per-decision ranges; the two must agree.
* ``gene_groups``: group id per decision; crossover takes whole groups from one parent, so a group
  should contain every decision that a constraint ties together.
* ``to_string`` / ``from_string``: the notation of the space's paper.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError

Arch = jax.Array  # int32[D]


class Space:
  """Base class of search spaces; subclasses are frozen dataclasses with a ``name`` field."""

  name: str

  # ---------------------------------------------------------------------------------- description
  @property
  def num_choices(self) -> tuple[int, ...]:
    raise NotImplementedError

  @property
  def num_decisions(self) -> int:
    return len(self.num_choices)

  @property
  def gene_groups(self) -> tuple[int, ...]:
    """Group id of every decision; crossover inherits each group whole from one parent."""
    return tuple(range(self.num_decisions))

  @property
  def size(self) -> int:
    """Exact number of distinct valid encodings (unconstrained spaces: the product of the choices)."""
    return math.prod(self.num_choices)

  def decision_name(self, d: int) -> str:
    """Human-readable name of decision ``d``, used in error messages."""
    return f"decision {d}"

  # ---------------------------------------------------------------------------------- hooks
  def _canonicalize(self, arch: Arch) -> Arch:
    return arch

  def _fix_mutation(self, old: Arch, new: Arch, d: jax.Array) -> Arch:
    del old, d
    return self._canonicalize(new)

  def _active(self, arch: Arch) -> jax.Array:
    del arch
    return jnp.asarray(np.asarray(self.num_choices) > 1)

  def _valid_extra(self, arch: Arch) -> jax.Array:
    del arch
    return jnp.bool_(True)

  def _check_extra(self, arch: np.ndarray) -> None:
    del arch

  # ---------------------------------------------------------------------------------- operators
  def _choices_array(self) -> jax.Array:
    return jnp.asarray(np.asarray(self.num_choices, dtype=np.int32))

  def sample(self, key: jax.Array) -> Arch:
    """Draws every decision uniformly, then canonicalizes (jittable, vmappable)."""
    raw = uniform_ints(key, (self.num_decisions,), self._choices_array())
    return self._canonicalize(raw)

  def mutate(self, key: jax.Array, arch: Arch) -> Arch:
    """Changes one active decision (chosen uniformly) to a different value (chosen uniformly), then
    repairs. Where no decision is active the change is one the repair undoes, so ``arch`` comes back."""
    arch = jnp.asarray(arch, jnp.int32)
    r = jax.random.bits(key, (2,), jnp.uint32)
    n = self._choices_array()
    active = self._active(arch)
    active = jnp.where(jnp.any(active), active, True)
    count = jnp.sum(active, dtype=jnp.uint32)
    # The (r mod count)-th active decision: one draw, whatever the number of active decisions.
    d = jnp.argmax(jnp.cumsum(active, dtype=jnp.uint32) > r[0] % count)
    nd = n[d]
    # An offset in [1, n) rather than a value in [0, n) guarantees a different value.
    offset = 1 + (r[1] % jnp.maximum(nd - 1, 1).astype(jnp.uint32)).astype(jnp.int32)
    new = arch.at[d].set((arch[d] + offset) % nd)
    return self._fix_mutation(arch, new, d).astype(jnp.int32)

  def crossover(self, key: jax.Array, a: Arch, b: Arch) -> Arch:
    """Uniform crossover over gene groups: each group is copied whole from one parent."""
    groups = np.asarray(self.gene_groups, dtype=np.int32)
    take_a = jax.random.bernoulli(key, 0.5, (int(groups.max()) + 1,))
    child = jnp.where(take_a[groups], jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32))
    return self._canonicalize(child).astype(jnp.int32)

  @functools.cached_property
  def _neighbor_table(self) -> tuple[np.ndarray, np.ndarray]:
    dec, off = [], []
    for d, n in enumerate(self.num_choices):
      for j in range(1, n):
        dec.append(d)
        off.append(j)
    return np.asarray(dec, np.int32), np.asarray(off, np.int32)

  @property
  def num_neighbors(self) -> int:
    """K, the static number of rows :meth:`neighbors` returns: sum over decisions of (choices - 1)."""
    return int(self._neighbor_table[0].shape[0])

  def neighbors(self, arch: Arch) -> jax.Array:
    """All single-decision changes, ``int32[K, D]`` with K = :attr:`num_neighbors` (static).

    Row ``k`` sets one decision to one other value and repairs it like a mutation, so in spaces with
    constraints a row may repeat another one or equal ``arch`` itself (see the space's docstring).
    """
    arch = jnp.asarray(arch, jnp.int32)
    dec, off = self._neighbor_table
    n = np.asarray(self.num_choices, np.int32)
    k = dec.shape[0]
    rows = jnp.broadcast_to(arch, (k, arch.shape[0]))
    rows = rows.at[np.arange(k), dec].set((arch[dec] + off) % n[dec])
    fixed = jax.vmap(lambda r, d: self._fix_mutation(arch, r, d))(rows, jnp.asarray(dec))
    return fixed.astype(jnp.int32)

  def is_valid(self, arch: Arch) -> jax.Array:
    """Whether ``arch`` is a valid encoding of this space (jittable; shape and dtype are static)."""
    arch = jnp.asarray(arch)
    if arch.shape != (self.num_decisions,) or not jnp.issubdtype(arch.dtype, jnp.integer):
      return jnp.bool_(False)
    n = self._choices_array()
    in_range = jnp.all((arch >= 0) & (arch < n))
    # Clipping keeps the extra checks' indexing in bounds; in_range already reports the violation.
    return in_range & self._valid_extra(jnp.clip(arch, 0, n - 1).astype(jnp.int32))

  # ---------------------------------------------------------------------------------- host side
  def check(self, arch: Any) -> np.ndarray:
    """Host-side validation: returns the encoding as ``np.int32[D]`` or raises NasjaxError."""
    try:
      a = np.asarray(arch)
    except Exception as e:  # noqa: BLE001 -- anything numpy cannot read is a user error here
      raise NasjaxError(f"{self.name}: cannot read the architecture as an array ({e})") from None
    if a.dtype.kind not in "iu":
      raise NasjaxError(
          f"{self.name}: an architecture is an integer vector of length {self.num_decisions}; "
          f"got dtype {a.dtype}")
    if a.shape != (self.num_decisions,):
      raise NasjaxError(
          f"{self.name}: an architecture is an integer vector of length {self.num_decisions}; "
          f"got shape {a.shape}")
    n = np.asarray(self.num_choices)
    bad = np.nonzero((a < 0) | (a >= n))[0]
    if bad.size:
      d = int(bad[0])
      raise NasjaxError(
          f"{self.name}: {self.decision_name(d)} is {int(a[d])}; accepted values are 0..{n[d] - 1}")
    a = a.astype(np.int32)
    self._check_extra(a)
    return a

  def to_string(self, arch: Any) -> str:
    raise NotImplementedError

  def from_string(self, s: str) -> np.ndarray:
    raise NotImplementedError

  def to_json(self, arch: Any) -> dict:
    """``{"space": name, "arch": <paper notation>, "encoding": [ints]}``."""
    a = self.check(arch)
    return {"space": self.name, "arch": self.to_string(a), "encoding": [int(v) for v in a]}

  def from_json(self, data: Any) -> np.ndarray:
    """Reads :meth:`to_json` output; needs "arch" or "encoding" (both must agree when both given)."""
    if not isinstance(data, Mapping):
      raise NasjaxError(
          f"{self.name}: expected a JSON object with keys 'space', 'arch' and/or 'encoding'; "
          f"got {type(data).__name__}")
    space = data.get("space", self.name)
    if space != self.name:
      raise NasjaxError(f"architecture belongs to space {space!r}, not {self.name!r}")
    unknown = sorted(set(data) - {"space", "arch", "encoding"} - set(self._extra_json_keys()))
    if unknown:
      raise NasjaxError(
          f"{self.name}: unknown JSON keys {unknown}; accepted: space, arch, encoding"
          + "".join(", " + k for k in self._extra_json_keys()))
    found = []
    if "encoding" in data:
      enc = data["encoding"]
      if (not isinstance(enc, Sequence) or isinstance(enc, str)
          or not all(isinstance(v, int) and not isinstance(v, bool) for v in enc)):
        raise NasjaxError(f"{self.name}: 'encoding' must be a list of integers; got {enc!r}")
      found.append(("encoding", self.check(np.asarray(enc, dtype=np.int64))))
    if "arch" in data:
      if not isinstance(data["arch"], str):
        raise NasjaxError(f"{self.name}: 'arch' must be a string; got {type(data['arch']).__name__}")
      found.append(("arch", self.from_string(data["arch"])))
    found.extend(self._from_extra_json(data))
    if not found:
      raise NasjaxError(f"{self.name}: the JSON object needs an 'arch' string or an 'encoding' list")
    first_key, first = found[0]
    for key, other in found[1:]:
      if not np.array_equal(first, other):
        raise NasjaxError(f"{self.name}: {first_key!r} and {key!r} describe different architectures")
    return first

  def _extra_json_keys(self) -> tuple[str, ...]:
    return ()

  def _from_extra_json(self, data: Mapping) -> list[tuple[str, np.ndarray]]:
    del data
    return []


def uniform_ints(key: jax.Array, shape: tuple[int, ...], n: Any) -> jax.Array:
  """Integers in ``[0, n)`` (``n`` broadcast to ``shape``) as 32 random bits modulo ``n``.

  The modulo bias (below n / 2**32, i.e. < 1e-8 for the choice counts of NAS spaces) is irrelevant to
  search, and one draw of bits compiles a few times faster on CPU than ``jax.random.randint``, which
  matters because every strategy jits these operators.
  """
  n = jnp.maximum(jnp.asarray(n), 1).astype(jnp.uint32)
  return (jax.random.bits(key, shape, jnp.uint32) % n).astype(jnp.int32)


def require_str(space_name: str, s: Any, example: str) -> str:
  """Shared guard of ``from_string``: only ``str`` is parsed."""
  if not isinstance(s, str):
    raise NasjaxError(f"{space_name}: expected a string like {example!r}; got {type(s).__name__}")
  return s


def shorten(s: str, limit: int = 60) -> str:
  """Quotes user text in error messages without flooding the terminal."""
  return s if len(s) <= limit else s[:limit - 3] + "..."
