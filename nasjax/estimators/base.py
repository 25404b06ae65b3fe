"""The estimator contract every strategy and driver relies on.

An estimator maps one architecture to its metrics: ``estimator(arch, key, fidelity=None) -> dict``.
Two properties decide how a driver may run it, and every estimator states them instead of leaving the
driver to guess:

* ``jittable``: the call is a pure function of ``(arch, key[, fidelity])`` that works under ``jax.jit``
  and ``jax.vmap`` and returns a dict of scalars (a table lookup, a zero-cost proxy, the shared weights
  of a trained supernet). A driver then evaluates a whole asked batch as one ``jit(vmap(estimator))``
  call. A training estimator is not jittable: it runs a host loop (checkpoints, progress, a NaN guard),
  so it is evaluated one architecture at a time or as Ray tasks.
* ``num_fidelities``: how many fidelity levels ``fidelity=`` accepts (1: none). Level
  ``num_fidelities - 1`` is the full evaluation; a multi-fidelity strategy must have as many levels.

Plain functions keep working: :func:`as_estimator` wraps one with the properties stated by the caller,
and :func:`is_jittable` reads a function without them as not jittable, the safe default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

from nasjax.errors import NasjaxError


@runtime_checkable
class Estimator(Protocol):
  """``estimator(arch, key, fidelity=None) -> metrics``, with the properties a driver needs."""
  jittable: bool
  num_fidelities: int

  def __call__(self, arch: Any, key: Any, fidelity: Any = None) -> dict:
    ...


@dataclasses.dataclass(frozen=True)
class FunctionEstimator:
  """A plain ``(arch, key) -> metrics`` function (or one taking ``fidelity=``) with stated properties."""
  fn: Callable
  jittable: bool = False
  num_fidelities: int = 1
  name: str = "function"

  def __call__(self, arch, key, fidelity=None):
    if fidelity is None:
      return self.fn(arch, key)
    return self.fn(arch, key, fidelity=fidelity)


def as_estimator(fn: Callable, *, jittable: bool, num_fidelities: int = 1, name: str | None = None) -> Estimator:
  """``fn`` as an :class:`Estimator`; an object that already states its properties is returned as is."""
  if isinstance(fn, Estimator):
    return fn
  if not callable(fn):
    raise NasjaxError(f"an estimator must be callable as (arch, key) -> metrics, got {type(fn).__name__}")
  if isinstance(num_fidelities, bool) or not isinstance(num_fidelities, int) or num_fidelities < 1:
    raise NasjaxError(f"num_fidelities must be a positive integer, got {num_fidelities!r}")
  return FunctionEstimator(fn, bool(jittable), num_fidelities, name or getattr(fn, "__name__", "function"))


def is_jittable(estimator: Any) -> bool:
  """What the estimator says of itself; a function that says nothing is run on the host."""
  return bool(getattr(estimator, "jittable", False))


def num_fidelities(estimator: Any) -> int:
  return int(getattr(estimator, "num_fidelities", 1) or 1)


def default_executor(estimator: Any) -> str:
  """``"vmap"`` for a jittable estimator (one compiled call per batch), ``"serial"`` otherwise."""
  return "vmap" if is_jittable(estimator) else "serial"
