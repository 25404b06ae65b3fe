"""The train state: a pytree of arrays only (params, BatchNorm statistics, optimizer state, step, raw PRNG
key data, ``extra``), so it replicates over a mesh, donates to the step and checkpoints as it is."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from nasjax.utils.jit import jit_with_options


def init_key(seed: int) -> jax.Array:
  """The parameter-initialisation key of ``seed``.

  An "rbg" key: XLA:CPU compiles the hundreds of threefry initialisers of a supernet about twice as slowly
  (tiny DARTS supernet: 68 s vs 34 s). Still deterministic for a seed on a given backend.
  """
  return jax.random.key(seed, impl="rbg")


def init_state(model_init: Callable[[jax.Array], dict], tx, seed: int, extra=None) -> dict:
  """The state at step 0: variables of ``model_init(init_key(seed))``, ``tx``'s state, the loop's key."""
  return _state(jit_with_options(model_init)(init_key(seed)), tx, seed, extra)


def state_from_variables(variables: dict, tx, seed: int, extra=None) -> dict:
  """The state at step 0 around given ``variables`` (fresh or inherited weights): ``tx``'s state and the
  loop's key of ``seed``, as :func:`init_state` makes it. Nothing is compiled for the variables themselves,
  so a search that starts many runs from weights it already holds compiles no program per run. The state
  holds copies: the train step donates its state, and the caller's weights (a parent network a child
  inherits from) must outlive it."""
  return _state(jax.tree.map(jnp.copy, variables), tx, seed, extra)


def _state(variables: dict, tx, seed: int, extra) -> dict:
  _, train_key = jax.random.split(jax.random.key(seed))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
          "opt_state": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32),
          "key": jax.random.key_data(train_key), "extra": extra if extra is not None else {}}
