"""Bayesian optimisation with a Gaussian process on a categorical (Hamming) architecture kernel.

The setting follows Kandasamy, Neiswanger, Schneider, Poczos & Xing, "Neural Architecture Search with
Bayesian Optimisation and Optimal Transport" (NASBOT), NeurIPS 2018 -- a GP whose kernel is an
exponentiated distance between architectures, ``k(a, b) = s^2 exp(-d(a, b) / l)``, with an acquisition
maximised over candidates bred from evaluated architectures -- and White, Neiswanger & Savani,
"BANANAS: Bayesian Optimization with Neural Architectures for Neural Architecture Search", AAAI 2021,
whose acquisition optimiser (random samples plus mutations of the best architectures) we use.

Here ``d`` is the Hamming distance between encodings divided by the number of decisions, i.e. half the
normalised L1 distance of their one-hot encodings: an architecture is a vector of categorical
decisions. The data are standardised; the amplitude ``s^2`` has its closed-form maximum-likelihood
value, and the length-scale ``l`` and the noise-to-signal ratio are chosen by maximising the marginal
likelihood over a small grid (Rasmussen & Williams, "Gaussian Processes for Machine Learning", MIT Press
2006, ch. 5). The acquisition is expected improvement (Jones, Schonlau & Welch, "Efficient Global
Optimization of Expensive Black-Box Functions", J. Global Optim. 1998) or an upper confidence bound
(Srinivas et al., "Gaussian Process Optimization in the Bandit Setting", ICML 2010).

Static shapes: the history is a ring buffer of ``capacity`` evaluations (the newest are kept once it is
full; the incumbent is tracked separately); the GP is solved on the full buffer with unobserved and
failed slots decoupled (unit diagonal, zero target), which leaves the likelihood and the posterior of
the observed points exactly as on the observed subset. Failed evaluations (NaN) stay out of the model
but are never asked again. The first ``num_init`` successful evaluations are random samples. With
``batch_size`` B > 1, the B candidates with the highest acquisition are asked together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.stats as jstats

from nasjax.errors import NasjaxError
from nasjax.strategies.base import (Strategy, check_choice, check_float, check_int, check_space, clean_fitness,
                                    initial_best, sample_batch, update_best)


def _positive_grid(name: str, option: str, values: Any) -> tuple[float, ...]:
  if isinstance(values, (int, float)) and not isinstance(values, bool):
    values = (values,)
  if (not isinstance(values, Sequence) or isinstance(values, str) or not values
      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")
                 for v in values)):
    raise NasjaxError(f"{name}: {option} must be a non-empty list of positive numbers; got {values!r}")
  return tuple(float(v) for v in values)


def bayesopt(space, capacity: int = 200, num_init: int = 10, num_random: int = 100, num_mutations: int = 100,
             acquisition: str = "ei", ucb_beta: float = 2.0,
             lengthscales: Sequence[float] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6),
             noise_levels: Sequence[float] = (1e-4, 1e-2, 1e-1), batch_size: int = 1) -> Strategy:
  """GP-based Bayesian optimisation over ``space``.

  Args:
    space: a search space.
    capacity: evaluations kept for the GP (a ring buffer; e.g. the search budget). Cost grows as
      ``capacity**3`` per ask.
    num_init: successful random evaluations before the model is used (>= 2).
    num_random: random candidates scored per ask.
    num_mutations: candidates per ask obtained by mutating the incumbent once or twice.
    acquisition: ``"ei"`` (expected improvement) or ``"ucb"`` (mean + sqrt(ucb_beta) * std).
    ucb_beta: the UCB exploration weight.
    lengthscales: grid of kernel length-scales, in units of "fraction of decisions that differ".
    noise_levels: grid of observation-noise variances relative to the signal variance.
    batch_size: architectures per ask (<= num_random + num_mutations).

  >>> from nasjax.spaces import NB201Space
  >>> s = bayesopt(NB201Space(), capacity=50, num_init=5)
  """
  name = "bayesopt"
  check_space(name, space)
  capacity = check_int(name, "capacity", capacity, 2)
  num_init = check_int(name, "num_init", num_init, 2)
  num_random = check_int(name, "num_random", num_random, 0)
  num_mutations = check_int(name, "num_mutations", num_mutations, 0)
  check_choice(name, "acquisition", acquisition, ("ei", "ucb"))
  ucb_beta = check_float(name, "ucb_beta", ucb_beta, 0.0, float("inf"), high_open=True)
  lengthscales = _positive_grid(name, "lengthscales", lengthscales)
  noise_levels = _positive_grid(name, "noise_levels", noise_levels)
  batch_size = check_int(name, "batch_size", batch_size)
  num_candidates = num_random + num_mutations
  if num_candidates < batch_size:
    raise NasjaxError(f"{name}: num_random + num_mutations ({num_candidates}) must be at least batch_size "
                      f"({batch_size})")
  if batch_size > capacity:
    raise NasjaxError(f"{name}: capacity ({capacity}) must be at least batch_size ({batch_size})")
  dims = space.num_decisions
  grid_l, grid_g = jnp.meshgrid(jnp.asarray(lengthscales), jnp.asarray(noise_levels), indexing="ij")
  grid_l, grid_g = grid_l.ravel(), grid_g.ravel()

  def init(key):
    del key
    return {**initial_best(dims),
            "archs": jnp.zeros((capacity, dims), jnp.int32),
            "values": jnp.zeros((capacity,), jnp.float32),
            "observed": jnp.zeros((capacity,), bool),  # slot holds a successful evaluation
            "filled": jnp.zeros((capacity,), bool),  # slot holds any evaluation (failed ones included)
            "num_ok": jnp.zeros((), jnp.int32),  # successful evaluations so far
            "lengthscale": jnp.asarray(lengthscales[0], jnp.float32),
            "noise": jnp.asarray(noise_levels[0], jnp.float32)}

  def distance(a, b):
    return jnp.mean(a[:, None, :] != b[None, :, :], axis=-1, dtype=jnp.float32)

  def fit_gp(state):
    """Standardised targets and, for the grid point of largest marginal likelihood, the Cholesky factor."""
    mask = state["observed"]
    n = jnp.maximum(jnp.sum(mask), 1)
    y = jnp.where(mask, state["values"], 0.0)
    mean = jnp.sum(y) / n
    std = jnp.sqrt(jnp.sum(jnp.where(mask, (y - mean) ** 2, 0.0)) / n)
    std = jnp.where(std > 0, std, 1.0)
    y = jnp.where(mask, (y - mean) / std, 0.0)
    dist = distance(state["archs"], state["archs"])
    pair = mask[:, None] & mask[None, :]

    def factor(lengthscale, noise):
      corr = jnp.where(pair, jnp.exp(-dist / lengthscale), 0.0)
      corr = corr + jnp.diag(jnp.where(mask, noise, 1.0))
      chol = jnp.linalg.cholesky(corr)
      alpha = jax.scipy.linalg.cho_solve((chol, True), y)
      # Profile likelihood: the amplitude's maximum-likelihood value is y^T C^-1 y / n.
      amp = jnp.maximum(jnp.dot(y, alpha) / n, 1e-8)
      log_ml = -0.5 * n * jnp.log(amp) - jnp.sum(jnp.log(jnp.diag(chol)))
      return chol, alpha, amp, jnp.where(jnp.isfinite(log_ml), log_ml, -jnp.inf)

    chols, alphas, amps, log_mls = jax.vmap(factor)(grid_l, grid_g)
    k = jnp.argmax(log_mls)
    return y, chols[k], alphas[k], amps[k], grid_l[k], grid_g[k]

  def ask(state, key):
    k_rand, k_mut, k_init, k_two = jax.random.split(key, 4)
    y, chol, alpha, amp, lengthscale, noise = fit_gp(state)
    mask = state["observed"]
    # Candidates: random samples, and one- and two-step mutations of the incumbent.
    cands = [sample_batch(space, k_rand, num_random)] if num_random else []
    if num_mutations:
      once = jax.vmap(space.mutate, in_axes=(0, None))(jax.random.split(k_mut, num_mutations), state["best_arch"])
      twice = jax.vmap(space.mutate)(jax.random.split(k_two, num_mutations), once)
      two_steps = (jnp.arange(num_mutations) % 2 == 1)[:, None]
      cands.append(jnp.where(two_steps, twice, once).astype(jnp.int32))
    cands = jnp.concatenate(cands, axis=0)
    k_star = jnp.where(mask[None, :], jnp.exp(-distance(cands, state["archs"]) / lengthscale), 0.0)
    mu = k_star @ alpha
    v = jax.scipy.linalg.solve_triangular(chol, k_star.T, lower=True)
    sd = jnp.sqrt(amp * jnp.maximum(1.0 - jnp.sum(v * v, axis=0), 1e-12))
    if acquisition == "ei":
      best = jnp.max(jnp.where(mask, y, -jnp.inf))
      z = (mu - best) / sd
      score = sd * (z * jstats.norm.cdf(z) + jstats.norm.pdf(z))
    else:
      score = mu + jnp.sqrt(ucb_beta) * sd
    # Never re-ask an evaluated architecture (failed ones included) nor a candidate twice.
    seen = jnp.any(jnp.all(cands[:, None, :] == state["archs"][None, :, :], axis=-1) & state["filled"][None],
                   axis=1)
    same = jnp.all(cands[:, None, :] == cands[None, :, :], axis=-1)
    repeat = jnp.any(jnp.tril(same, k=-1), axis=1)
    score = jnp.where(seen | repeat | ~jnp.isfinite(score), -jnp.inf, score)
    _, top = jax.lax.top_k(score, batch_size)
    chosen = cands[top]
    # Until num_init evaluations succeeded (counting the rows asked before), rows are random samples.
    random_rows = state["num_ok"] + jnp.arange(batch_size) < num_init
    archs = jnp.where(random_rows[:, None], sample_batch(space, k_init, batch_size), chosen)
    return archs, {**state, "lengthscale": lengthscale.astype(jnp.float32), "noise": noise.astype(jnp.float32)}

  def tell(state, archs, fitness):
    archs = jnp.asarray(archs, jnp.int32)
    fit = clean_fitness(fitness)
    rows = archs.shape[0]
    ok = fit > -jnp.inf
    # Ring buffer; with more rows than capacity the last ones win (scatter writes them last).
    slots = (state["count"] + jnp.arange(rows)) % capacity
    out = update_best(state, archs, fitness)
    return {**out,
            "archs": state["archs"].at[slots].set(archs),
            "values": state["values"].at[slots].set(jnp.where(ok, fit, 0.0)),
            "observed": state["observed"].at[slots].set(ok),
            "filled": state["filled"].at[slots].set(True),
            "num_ok": state["num_ok"] + jnp.sum(ok, dtype=jnp.int32)}

  return Strategy(init, ask, tell, name=name)
