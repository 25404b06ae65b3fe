"""REINFORCE over an independent categorical policy per decision.

Williams, "Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement Learning",
Machine Learning 1992, as used as a NAS baseline by Dong & Yang, "NAS-Bench-201", ICLR 2020 (their
"REINFORCE": one softmax distribution per edge, the architecture's accuracy as reward, an exponential
moving average of the reward as baseline, Adam). ``tell`` takes one Adam step (optax) on
``-mean_j (r_j - b) log p(a_j) - entropy_weight * H(p)`` and then moves the baseline ``b`` towards the
batch's mean reward: ``b <- decay * b + (1 - decay) * mean(r)`` (the first batch initialises it).

The policy is a logit table ``float32[D, max choices]``, the invalid tail of each row masked out. In
spaces with constraints across decisions (DARTS nodes need two distinct inputs, macro layers zero the
fields their type ignores) an independent sample may be invalid; it is then repaired by applying the
sampled decisions one by one, as mutations, to a valid random architecture (the space's
``_fix_mutation`` hook), which returns the sample itself whenever it is valid. The gradient uses the
log-probability of the raw sample and the reward of its repair: the repair is part of the environment,
so the estimator stays unbiased for the policy over raw samples. Failed evaluations (NaN) get no
gradient and leave the baseline alone. The most likely architecture is ``argmax(state["logits"], -1)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.strategies.base import (Strategy, check_float, check_int, check_space, clean_fitness, initial_best,
                                    update_best)

_MASKED = -1e9  # finite, so 0 * masked logit stays 0 in the entropy and its gradient


def reinforce(space, learning_rate: float = 0.05, baseline_decay: float = 0.9, entropy_weight: float = 0.0,
              batch_size: int = 1) -> Strategy:
  """REINFORCE with an EMA baseline over ``space``.

  Args:
    space: a search space.
    learning_rate: Adam step size on the logits.
    baseline_decay: EMA decay of the reward baseline, in [0, 1).
    entropy_weight: weight of the policy-entropy bonus (>= 0).
    batch_size: architectures sampled per ask, one policy step per tell.

  >>> from nasjax.spaces import NB201Space
  >>> s = reinforce(NB201Space(), learning_rate=0.05)
  """
  name = "reinforce"
  check_space(name, space)
  learning_rate = check_float(name, "learning_rate", learning_rate, 0.0, float("inf"), low_open=True,
                              high_open=True)
  decay = check_float(name, "baseline_decay", baseline_decay, 0.0, 1.0, high_open=True)
  entropy_weight = check_float(name, "entropy_weight", entropy_weight, 0.0, float("inf"), high_open=True)
  batch_size = check_int(name, "batch_size", batch_size)
  num_choices = np.asarray(space.num_choices, np.int32)
  dims = len(num_choices)
  width = int(num_choices.max())
  mask = jnp.asarray(np.arange(width)[None, :] < num_choices[:, None])
  optimizer = optax.adam(learning_rate)

  def log_policy(logits):
    return jax.nn.log_softmax(jnp.where(mask, logits, _MASKED), axis=-1)

  def repair(key, raw):
    base = space.sample(key).astype(jnp.int32)

    def apply(arch, d):
      new = arch.at[d].set(raw[d])
      return space._fix_mutation(arch, new, d).astype(jnp.int32), None  # noqa: SLF001 -- the space's hook

    fixed, _ = jax.lax.scan(apply, base, jnp.arange(dims))
    return jnp.where(space.is_valid(raw), raw, fixed)

  def init(key):
    del key
    logits = jnp.zeros((dims, width), jnp.float32)
    return {**initial_best(dims), "logits": logits, "opt_state": optimizer.init(logits),
            "baseline": jnp.zeros((), jnp.float32), "has_baseline": jnp.asarray(False),
            "raw": jnp.zeros((batch_size, dims), jnp.int32), "asked": jnp.zeros((batch_size, dims), jnp.int32)}

  def ask(state, key):
    k_sample, k_repair = jax.random.split(key)
    logp = log_policy(state["logits"])
    raw = jax.random.categorical(k_sample, logp, axis=-1, shape=(batch_size, dims)).astype(jnp.int32)
    archs = jax.vmap(repair)(jax.random.split(k_repair, batch_size), raw)
    return archs, {**state, "raw": raw, "asked": archs}

  def tell(state, archs, fitness):
    archs = jnp.asarray(archs, jnp.int32)
    rows = archs.shape[0]
    reward = clean_fitness(fitness)
    ok = reward > -jnp.inf
    num_ok = jnp.sum(ok)
    # The raw sample behind each row, unless the driver told something else than was asked.
    same = jnp.all(archs == state["asked"][:rows], axis=-1, keepdims=True)
    actions = jnp.where(same, state["raw"][:rows], archs)
    mean_reward = jnp.sum(jnp.where(ok, reward, 0.0)) / jnp.maximum(num_ok, 1)
    baseline = jnp.where(state["has_baseline"], state["baseline"], mean_reward)
    advantage = jnp.where(ok, reward - baseline, 0.0)

    def loss(logits):
      logp = log_policy(logits)
      chosen = jnp.take_along_axis(logp[None], actions[..., None], axis=-1)[..., 0].sum(-1)  # [rows]
      entropy = -jnp.sum(jnp.where(mask, jnp.exp(logp) * logp, 0.0))
      return -jnp.sum(advantage * chosen) / jnp.maximum(num_ok, 1) - entropy_weight * entropy

    grads = jax.grad(loss)(state["logits"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["logits"])
    step = num_ok > 0
    logits = jnp.where(step, optax.apply_updates(state["logits"], updates), state["logits"])
    opt_state = jax.tree.map(lambda new, old: jnp.where(step, new, old), opt_state, state["opt_state"])
    out = update_best(state, archs, fitness)
    return {**out, "logits": logits, "opt_state": opt_state,
            "baseline": jnp.where(step, decay * baseline + (1 - decay) * mean_reward, state["baseline"]),
            "has_baseline": state["has_baseline"] | step}

  return Strategy(init, ask, tell, name=name)
