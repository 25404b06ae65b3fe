"""Learning-curve extrapolation and early termination of unpromising training runs.

Domhan, Springenberg & Hutter, "Speeding up Automatic Hyperparameter Optimization of Deep Neural Networks
by Extrapolation of Learning Curves", IJCAI 2015: fit an ensemble of parametric curve families to the
first epochs of a validation-accuracy curve, turn the ensemble into a predictive distribution of the
accuracy at the last epoch, and stop a run once P(final accuracy > best seen so far) drops below a
threshold. Nine of their eleven families are here (pow3, pow4, log power, exp3, exp4, vapor pressure,
MMF, Janoschek, Weibull; ``x`` is the 1-based epoch), with their constraints that a prediction lies in
the accuracy range and that the curve does not decrease after the last observed epoch.

How the distribution is built (the paper samples the ensemble by MCMC; this module uses a deterministic
approximation that is cheap enough to run every epoch and jits and vmaps over curves):

1. Every family is fitted by least squares with Levenberg-Marquardt from ``num_starts`` data-driven
   initialisations (``lax.scan``; ``vmap`` over families, starts and curves), keeping its best start.
   Positive parameters are fitted in log space, so LM needs no bounds.
2. A fit is discarded (weight 0) when it diverged (non-finite loss or parameters, ``|theta| > 1e3``), has
   fewer than ``p + 1`` observations, predicts outside ``value_range`` at the horizon, or decreases
   between the last observed epoch and the horizon.
3. Each kept family gives a Gaussian for the final value by a Laplace (delta-method) approximation:
   mean ``f(T)``, variance ``sigma^2 + g^T Cov g`` with ``Cov = sigma^2 (J^T J + tau I)^-1`` (``tau`` a weak
   Gaussian prior on the parameters), ``g = df(T)/dtheta`` and ``sigma^2`` the residual variance
   (floored at ``noise_floor^2``), truncated to ``value_range``.
4. The families are mixed with BIC weights, ``w_k ~ exp(-BIC_k / 2)``, the usual large-sample
   approximation of Bayesian model averaging.

Results that never crash: a NaN or Inf inside the observed curve marks the prediction ``failed`` (the run
diverged; its probability to beat anything is 0, as a NaN fitness never wins a search). When no family
survives step 2 the prediction is ``ok=False`` and its probabilities are NaN ("unknown"); the early
stopping rule then keeps training, because it only stops runs it is confident about.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import ndtr

from nasjax.errors import DivergenceError, NasjaxError

# ---------------------------------------------------------------------------------------------- families
# Each family maps an unconstrained theta in R^4 (unused entries ignored) and the epoch x >= 1 to a value.


def _pow3(t, x):
  return t[0] - t[1] * x ** (-jnp.exp(t[2]))


def _pow4(t, x):
  return t[0] - (jnp.exp(t[1]) * x + jnp.exp(t[2])) ** (-jnp.exp(t[3]))


def _log_power(t, x):
  # a / (1 + (x / e^b)^c) with c = -exp(t2) < 0, written in log x so large x cannot overflow.
  return t[0] * jax.nn.sigmoid(jnp.exp(t[2]) * (jnp.log(x) - t[1]))


def _exp3(t, x):
  return t[0] - jnp.exp(-jnp.exp(t[1]) * x + t[2])


def _exp4(t, x):
  return t[0] - jnp.exp(-jnp.exp(t[1]) * x ** jnp.exp(t[3]) + t[2])


def _vapor_pressure(t, x):
  return jnp.exp(t[0] + t[1] / x + t[2] * jnp.log(x))


def _mmf(t, x):
  return t[0] - (t[0] - t[1]) / (1.0 + (jnp.exp(t[2]) * x) ** jnp.exp(t[3]))


def _janoschek(t, x):
  return t[0] - (t[0] - t[1]) * jnp.exp(-jnp.exp(t[2]) * x ** jnp.exp(t[3]))


def _weibull(t, x):
  return t[0] - (t[0] - t[1]) * jnp.exp(-(jnp.exp(t[2]) * x) ** jnp.exp(t[3]))


# Initial theta from the first and last observed values (y0, yn), the number of observations n, an
# asymptote offset d above yn and a rate multiplier r; the starts vary (d, r).
def _safe_log(v):
  return jnp.log(jnp.maximum(v, 1e-3))


def _init_pow3(y0, yn, n, d, r):
  c = yn + d
  return jnp.stack([c, jnp.maximum(c - y0, 1e-3), jnp.log(0.5 * r), 0.0])


def _init_pow4(y0, yn, n, d, r):
  c = yn + d
  alpha = 0.5 * r
  s = jnp.maximum(c - y0, 1e-3) ** (-1.0 / alpha)  # (a + b)^-alpha = c - y0 at x = 1
  return jnp.stack([c, jnp.log(0.9 * s), jnp.log(0.1 * s), jnp.log(alpha)])


def _init_log_power(y0, yn, n, d, r):
  a = yn + d
  frac = jnp.clip(y0 / a, 1e-3, 1 - 1e-3)
  # sigmoid(r (0 - b)) = y0 / a at x = 1.
  return jnp.stack([a, -jnp.log(frac / (1 - frac)) / r, jnp.log(r), 0.0])


def _init_exp3(y0, yn, n, d, r):
  c = yn + d
  a = r / n
  return jnp.stack([c, jnp.log(a), _safe_log(c - y0) + a, 0.0])


def _init_exp4(y0, yn, n, d, r):
  c = yn + d
  a = r / n
  return jnp.stack([c, jnp.log(a), _safe_log(c - y0) + a, 0.0])


def _init_vapor_pressure(y0, yn, n, d, r):
  a = _safe_log(yn + d)
  return jnp.stack([a, (_safe_log(y0) - a) * r, 0.0, 0.0])


def _init_saturating(y0, yn, n, d, r):
  # MMF, Janoschek and Weibull share the (asymptote, value at 0, rate, shape) layout.
  return jnp.stack([yn + d, y0 - d, jnp.log(r / n), 0.0])


class Family(NamedTuple):
  fn: Callable
  init: Callable
  num_params: int


FAMILIES: dict[str, Family] = {
    "pow3": Family(_pow3, _init_pow3, 3),
    "pow4": Family(_pow4, _init_pow4, 4),
    "log_power": Family(_log_power, _init_log_power, 3),
    "exp3": Family(_exp3, _init_exp3, 3),
    "exp4": Family(_exp4, _init_exp4, 4),
    "vapor_pressure": Family(_vapor_pressure, _init_vapor_pressure, 3),
    "mmf": Family(_mmf, _init_saturating, 4),
    "janoschek": Family(_janoschek, _init_saturating, 4),
    "weibull": Family(_weibull, _init_saturating, 4),
}
NUM_THETA = 4
_OFFSETS = (0.02, 0.15)
_RATES = (0.5, 1.0, 2.0, 4.0)


def family_value(name: str, theta, x) -> jax.Array:
  """The curve of family ``name`` at epochs ``x`` for this module's (unconstrained) ``theta``."""
  if name not in FAMILIES:
    raise NasjaxError(f"unknown curve family {name!r}; accepted: {', '.join(FAMILIES)}")
  return FAMILIES[name].fn(jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32))


# ---------------------------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class CurveModel:
  """Static settings of the extrapolation (hashable: a ``jit`` static argument).

  Attributes:
    families: names from :data:`FAMILIES`.
    num_starts: LM initialisations per family (up to 8: two asymptote offsets x four rates).
    iterations: LM iterations per start.
    value_range: the range of the metric (accuracy: 0..1); predictions outside it are discarded and the
      predictive distribution is truncated to it.
    noise_floor: smallest residual standard deviation assumed (keeps exact fits from claiming certainty).
    prior_precision: ``tau``, precision of the weak Gaussian prior on theta in the Laplace step.
    monotone_tolerance: how much a kept fit may decrease after the last observation.
  """
  families: tuple[str, ...] = tuple(FAMILIES)
  num_starts: int = 8
  iterations: int = 100
  value_range: tuple[float, float] = (0.0, 1.0)
  noise_floor: float = 1e-3
  prior_precision: float = 1e-4
  monotone_tolerance: float = 1e-3

  def __post_init__(self):
    families = tuple(self.families) if not isinstance(self.families, str) else (self.families,)
    unknown = [f for f in families if f not in FAMILIES]
    if not families or unknown or len(set(families)) != len(families):
      raise NasjaxError(f"CurveModel.families must be distinct names from {', '.join(FAMILIES)}; got "
                        f"{self.families!r}")
    object.__setattr__(self, "families", families)
    max_starts = len(_OFFSETS) * len(_RATES)
    for field, lo, hi in (("num_starts", 1, max_starts), ("iterations", 1, 10_000)):
      v = getattr(self, field)
      if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise NasjaxError(f"CurveModel.{field} must be an integer in {lo}..{hi}; got {v!r}")
    try:
      lo, hi = (float(v) for v in self.value_range)
    except (TypeError, ValueError):
      lo = hi = float("nan")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
      raise NasjaxError(f"CurveModel.value_range must be two finite numbers lo < hi; got "
                        f"{self.value_range!r}")
    object.__setattr__(self, "value_range", (lo, hi))
    for field in ("noise_floor", "prior_precision", "monotone_tolerance"):
      v = getattr(self, field)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise NasjaxError(f"CurveModel.{field} must be a positive finite number; got {v!r}")


class Prediction(NamedTuple):
  """Predictive distribution of the value at the horizon: a truncated Gaussian mixture over families.

  Leading batch axes appear when produced by :func:`predict_batch`. ``weights`` sum to 1 over the
  ``valid`` families when ``ok``; ``params`` holds each family's fitted theta (``[K, 4]``).
  """
  mean: jax.Array
  family_mean: jax.Array
  family_std: jax.Array
  weights: jax.Array
  valid: jax.Array
  params: jax.Array
  ok: jax.Array
  failed: jax.Array
  lower: jax.Array  # value_range bounds, carried so the distribution functions need no model
  upper: jax.Array


def _check_int(name: str, v: Any, lo: int) -> int:
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
    raise NasjaxError(f"{name} must be an integer >= {lo}; got {v!r}")
  return int(v)


# ---------------------------------------------------------------------------------------------- fitting
def _family_switch(model: CurveModel, what: str):
  branches = [getattr(FAMILIES[f], what) for f in model.families]
  return lambda k, *args: lax.switch(k, branches, *args)


def _lm_fit(model: CurveModel, family: jax.Array, theta0, x, y, mask):
  """Levenberg-Marquardt on the sum of squared masked residuals; returns (theta, loss, jacobian).

  Each iteration evaluates residuals and Jacobian once, at the candidate of the previous iteration
  (accepted when it lowers the loss); keeping the best point's Jacobian in the carry means the curve
  family is traced once per fit, which keeps the compile time of nine families low.
  """
  value = _family_switch(model, "fn")

  def residuals(theta):
    r = jnp.where(mask, value(family, theta, x) - y, 0.0)
    return r, r

  def linearize(theta):
    jac, r = jax.jacfwd(residuals, has_aux=True)(theta)
    loss = jnp.sum(r * r)
    ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(jac))
    return jnp.where(ok, loss, jnp.inf), jnp.where(ok, jac, 0.0), jnp.where(ok, r, 0.0)

  def propose(theta, jac, r, lam):
    h = jac.T @ jac
    # Marquardt's scaling: damping proportional to each parameter's curvature, plus a small constant so
    # the parameters a family does not use stay put.
    damped = h + lam * (jnp.diag(jnp.diag(h)) + 1e-6 * jnp.eye(NUM_THETA))
    delta = jnp.linalg.solve(damped, -(jac.T @ r))
    return theta + jnp.where(jnp.isfinite(delta), delta, 0.0)

  def step(carry, _):
    best, best_loss, best_jac, best_r, candidate, lam = carry
    loss, jac, r = linearize(candidate)
    better = loss < best_loss
    best = jnp.where(better, candidate, best)
    best_loss = jnp.where(better, loss, best_loss)
    best_jac = jnp.where(better, jac, best_jac)
    best_r = jnp.where(better, r, best_r)
    lam = jnp.clip(jnp.where(better, lam * 0.3, lam * 4.0), 1e-9, 1e9)
    return (best, best_loss, best_jac, best_r, propose(best, best_jac, best_r, lam), lam), None

  lam0 = jnp.float32(1e-2)
  carry = (theta0, jnp.float32(jnp.inf), jnp.zeros((x.shape[0], NUM_THETA)), jnp.zeros_like(x), theta0, lam0)
  (theta, loss, jac, _, _, _), _ = lax.scan(step, carry, None, length=model.iterations + 1)
  return theta, loss, jac


def _predict_one(model: CurveModel, values, num_observed, horizon) -> Prediction:
  values = jnp.asarray(values, jnp.float32)
  t_max = values.shape[0]
  n = jnp.clip(jnp.asarray(num_observed, jnp.int32), 0, t_max)
  horizon = jnp.asarray(horizon, jnp.float32)
  mask = jnp.arange(t_max) < n
  x = jnp.arange(1, t_max + 1, dtype=jnp.float32)
  failed = jnp.any(mask & ~jnp.isfinite(values))
  y = jnp.where(mask & jnp.isfinite(values), values, 0.0)
  nf = jnp.maximum(n, 1).astype(jnp.float32)
  y0 = y[0]
  yn = y[jnp.maximum(n - 1, 0)]
  lo, hi = model.value_range

  num_families = len(model.families)
  fam_ids = jnp.arange(num_families)
  starts = [(d, r) for d in _OFFSETS for r in _RATES][:model.num_starts]
  offs = jnp.asarray([d for d, _ in starts], jnp.float32) * (hi - lo)
  rates = jnp.asarray([r for _, r in starts], jnp.float32)
  init = _family_switch(model, "init")
  value = _family_switch(model, "fn")

  def fit_family(k):
    theta0 = jax.vmap(lambda d, r: init(k, y0, yn, nf, d, r))(offs, rates).astype(jnp.float32)
    thetas, losses, jacs = jax.vmap(lambda t: _lm_fit(model, k, t, x, y, mask))(theta0)
    best = jnp.argmin(losses)
    return thetas[best], losses[best], jacs[best]

  thetas, rss, jacs = jax.vmap(fit_family)(fam_ids)
  num_params = jnp.asarray([FAMILIES[f].num_params for f in model.families], jnp.float32)

  def analyse(k, theta, rss_k, jac, p):
    # The horizon and a grid from the last observation to it, traced once: value and gradient together.
    grid = nf + (horizon - nf) * jnp.linspace(0.0, 1.0, 16)
    points = jnp.concatenate([horizon[None], grid])
    point_jac, path = jax.jacfwd(lambda t: (value(k, t, points),) * 2, has_aux=True)(theta)
    mean, grad, path = path[0], point_jac[0], path[1:]
    sigma2 = jnp.maximum(rss_k / jnp.maximum(nf - p, 1.0), model.noise_floor ** 2)
    # Cov = sigma^2 (J^T J + tau I)^-1 from the SVD of J: better conditioned in float32 than J^T J.
    _, s, vt = jnp.linalg.svd(jac, full_matrices=False)
    proj = vt @ jnp.where(jnp.isfinite(grad), grad, 0.0)
    param_var = sigma2 * jnp.sum(proj ** 2 / (s ** 2 + model.prior_precision))
    std = jnp.sqrt(sigma2 + param_var)
    # Domhan et al.: the curve may not decrease after the last observation; checked on the grid.
    monotone = jnp.all(jnp.diff(path) >= -model.monotone_tolerance * (hi - lo))
    valid = (jnp.isfinite(rss_k) & jnp.all(jnp.isfinite(theta)) & (jnp.max(jnp.abs(theta)) < 1e3)
             & (nf >= p + 1) & jnp.isfinite(mean) & (mean >= lo) & (mean <= hi) & monotone
             & jnp.isfinite(std) & jnp.all(jnp.isfinite(path)))
    # Gaussian log-likelihood at the ML noise level (floored), then BIC.
    ml_var = jnp.maximum(rss_k / nf, model.noise_floor ** 2)
    loglik = -0.5 * nf * (jnp.log(2 * jnp.pi * ml_var) + rss_k / (nf * ml_var))
    bic = -2.0 * loglik + p * jnp.log(nf)
    return mean, jnp.minimum(std, hi - lo), valid, bic

  means, stds, valid, bic = jax.vmap(analyse)(fam_ids, thetas, rss, jacs, num_params)
  valid = valid & ~failed
  ok = jnp.any(valid)
  logw = jnp.where(valid, -0.5 * bic, -jnp.inf)
  weights = jnp.where(ok, jax.nn.softmax(jnp.where(ok, logw, 0.0)), 0.0)
  weights = jnp.where(valid, weights, 0.0)
  means = jnp.where(valid, means, (lo + hi) / 2)
  stds = jnp.where(valid, stds, hi - lo)
  pred = Prediction(mean=jnp.float32(0.0), family_mean=means, family_std=stds, weights=weights,
                    valid=valid, params=thetas, ok=ok & ~failed, failed=failed,
                    lower=jnp.float32(lo), upper=jnp.float32(hi))
  return pred._replace(mean=_mixture_mean(pred))


def _trunc_bounds(pred: Prediction):
  # [..., None]: the bounds are per curve, the means and deviations per curve and family.
  a = (pred.lower[..., None] - pred.family_mean) / pred.family_std
  b = (pred.upper[..., None] - pred.family_mean) / pred.family_std
  return a, b, jnp.maximum(ndtr(b) - ndtr(a), 1e-12)


def _mixture_mean(pred: Prediction) -> jax.Array:
  a, b, z = _trunc_bounds(pred)
  phi = lambda v: jnp.exp(-0.5 * v * v) / jnp.sqrt(2 * jnp.pi)  # noqa: E731
  component = pred.family_mean + pred.family_std * (phi(a) - phi(b)) / z
  component = jnp.clip(component, pred.lower[..., None], pred.upper[..., None])
  return jnp.where(pred.ok, jnp.sum(pred.weights * component, axis=-1), jnp.nan)


def cdf(pred: Prediction, value) -> jax.Array:
  """P(final <= value) under ``pred`` (jittable; NaN when ``not ok``; 1 for a failed run)."""
  a, _, z = _trunc_bounds(pred)
  v = jnp.clip(jnp.asarray(value, jnp.float32), pred.lower, pred.upper)[..., None]
  per_family = (ndtr((v - pred.family_mean) / pred.family_std) - ndtr(a)) / z
  total = jnp.clip(jnp.sum(pred.weights * per_family, axis=-1), 0.0, 1.0)
  return jnp.where(pred.failed, 1.0, jnp.where(pred.ok, total, jnp.nan))


def prob_exceeds(pred: Prediction, target) -> jax.Array:
  """P(final > target) (jittable). A failed run gives 0; an uninformative fit (``not ok``) NaN."""
  return 1.0 - cdf(pred, target)


def predictive_interval(pred: Prediction, level: float = 0.9) -> tuple[jax.Array, jax.Array]:
  """Central interval holding ``level`` of the predictive mass (bisection on the mixture CDF)."""
  if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0 < level < 1:
    raise NasjaxError(f"level must be a number in (0, 1); got {level!r}")
  return quantile(pred, (1 - level) / 2), quantile(pred, (1 + level) / 2)


def quantile(pred: Prediction, q) -> jax.Array:
  """The ``q``-quantile of the predictive distribution (jittable; NaN when not ``ok``)."""
  q = jnp.asarray(q, jnp.float32)

  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = cdf(pred, mid) < q
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = lax.fori_loop(0, 40, body, (pred.lower * jnp.ones_like(pred.mean),
                                       pred.upper * jnp.ones_like(pred.mean)))
  return jnp.where(pred.ok, 0.5 * (lo + hi), jnp.nan)


@functools.partial(jax.jit, static_argnums=0)
def _predict_batch_jit(model, values, num_observed, horizon):
  return jax.vmap(functools.partial(_predict_one, model))(values, num_observed, horizon)


@functools.partial(jax.jit, static_argnums=0)
def _predict_one_jit(model, values, num_observed, horizon):
  return _predict_one(model, values, num_observed, horizon)


def predict_batch(values, num_observed, horizon, model: CurveModel | None = None) -> Prediction:
  """Predictions for many curves at once (one compiled, vmapped fit).

  Args:
    values: ``[N, T]`` curves; entries at and after ``num_observed[i]`` are ignored (pad with anything).
    num_observed: ``[N]`` observed epochs per curve, ``0..T``.
    horizon: the epoch whose value is predicted, a scalar or ``[N]``; usually the full budget.
    model: settings; :class:`CurveModel` defaults when None.
  """
  model = model or CurveModel()
  values = np.asarray(values, np.float32)
  if values.ndim != 2 or values.shape[1] < 1:
    raise NasjaxError(f"predict_batch: values must be [num_curves, num_epochs]; got shape {values.shape}")
  num_observed = np.broadcast_to(np.asarray(num_observed), values.shape[:1]).astype(np.int32)
  horizon = np.broadcast_to(np.asarray(horizon, np.float32), values.shape[:1])
  if np.any(num_observed < 0) or np.any(num_observed > values.shape[1]):
    raise NasjaxError(f"predict_batch: num_observed must lie in 0..{values.shape[1]}")
  if not np.all(np.isfinite(horizon)) or np.any(horizon < num_observed):
    raise NasjaxError("predict_batch: the horizon must be a finite epoch >= num_observed of each curve")
  return _predict_batch_jit(model, values, num_observed, horizon)


def _as_curve(curve: Any) -> np.ndarray:
  try:
    c = np.asarray(curve, dtype=np.float64).reshape(-1)
  except (TypeError, ValueError):
    raise NasjaxError(f"a learning curve is a sequence of numbers (one per epoch); got {type(curve).__name__}") \
        from None
  if c.size == 0:
    raise NasjaxError("a learning curve needs at least one observed epoch")
  return c


def predict(curve: Sequence[float], horizon: int, model: CurveModel | None = None) -> Prediction:
  """Prediction of the value at epoch ``horizon`` from the observed ``curve`` (epochs 1..len(curve)).

  The curve is padded to ``horizon`` entries, so every call with one horizon shares one compilation.
  """
  model = model or CurveModel()
  c = _as_curve(curve)
  horizon = _check_int("horizon", horizon, 1)
  if c.size > horizon:
    raise NasjaxError(f"the curve has {c.size} epochs, more than the horizon {horizon}")
  padded = np.zeros(horizon, np.float32)
  with np.errstate(over="ignore", invalid="ignore"):
    padded[:c.size] = c.astype(np.float32)
  return _predict_one_jit(model, padded, np.int32(c.size), np.float32(horizon))


def probability_to_beat(curve: Sequence[float], target: float, horizon: int,
                        model: CurveModel | None = None) -> float:
  """P(value at epoch ``horizon`` > ``target``) given the observed ``curve``.

  0.0 for a curve containing NaN/Inf (a failed run), NaN when no curve family gives a valid fit.
  """
  if isinstance(target, bool) or not isinstance(target, (int, float, np.floating, np.integer)):
    raise NasjaxError(f"target must be a number; got {target!r}")
  return float(prob_exceeds(predict(curve, horizon, model), float(target)))


# ---------------------------------------------------------------------------------------------- early stop
@dataclasses.dataclass
class EarlyStopResult:
  """Outcome of :func:`early_stopping_trainer`.

  ``curve`` holds the validation accuracy of every epoch run; ``epochs_run`` is the compute used (in
  epochs) and ``epochs_saved = epochs_budget - epochs_run``. ``probability`` and ``predicted_final`` are
  those of the last check (None when no check ran).
  """
  state: Any
  curve: list
  epochs_run: int
  epochs_budget: int
  stopped_early: bool
  failed: bool
  probability: float | None
  predicted_final: float | None

  @property
  def epochs_saved(self) -> int:
    return self.epochs_budget - self.epochs_run


def default_min_epochs(epochs: int) -> int:
  """At least 5 points (every family gets p + 1 observations) and a tenth of the budget."""
  return min(epochs, max(5, epochs // 10))


def early_stopping_trainer(epoch_fn: Callable[[Any, int], tuple[Any, float]], state: Any, *, epochs: int,
                           best_so_far: float | None, threshold: float = 0.05,
                           min_epochs: int | None = None, check_every: int = 1,
                           model: CurveModel | None = None) -> EarlyStopResult:
  """Runs ``epoch_fn(state, epoch) -> (state, valid_acc)`` for up to ``epochs`` epochs (0-based ``epoch``)
  and stops once ``P(final acc > best_so_far) < threshold`` (checked after ``min_epochs`` epochs and
  then every ``check_every``), the rule of Domhan et al. 2015.

  A non-finite accuracy ends the run as failed. ``best_so_far`` None or NaN (nothing to beat yet)
  disables termination. An uninformative prediction (no valid fit) never terminates.
  """
  epochs = _check_int("epochs", epochs, 1)
  min_epochs = default_min_epochs(epochs) if min_epochs is None else _check_int("min_epochs", min_epochs, 1)
  check_every = _check_int("check_every", check_every, 1)
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
    raise NasjaxError(f"threshold must be a probability in (0, 1); got {threshold!r}")
  if not callable(epoch_fn):
    raise NasjaxError("epoch_fn must be a function (state, epoch) -> (state, valid_accuracy)")
  target = None if best_so_far is None or not math.isfinite(float(best_so_far)) else float(best_so_far)
  curve: list[float] = []
  probability = predicted = None
  for epoch in range(epochs):
    state, acc = epoch_fn(state, epoch)
    acc = float(acc)
    curve.append(acc)
    if not math.isfinite(acc):
      return EarlyStopResult(state, curve, epoch + 1, epochs, False, True, 0.0, None)
    seen = epoch + 1
    if target is None or seen >= epochs or seen < min_epochs or (seen - min_epochs) % check_every:
      continue
    pred = predict(curve, epochs, model)
    probability = float(prob_exceeds(pred, target))
    predicted = float(pred.mean)
    if math.isfinite(probability) and probability < threshold:
      return EarlyStopResult(state, curve, seen, epochs, True, False, probability, predicted)
  return EarlyStopResult(state, curve, len(curve), epochs, False, False, probability, predicted)


class EarlyStoppingEstimator:
  """A ``search.run`` estimator that trains each architecture with early termination.

  ``make_run(arch, key) -> (state, epoch_fn)`` prepares one training run (see :func:`make_epoch_fn`).
  A run stopped early reports as ``"accuracy"`` the mean of its predictive distribution (what Domhan et
  al. return to the optimiser), with the last measured value as ``"observed_accuracy"``; a failed run
  reports NaN.

  **Stateful.** The estimator remembers the best accuracy of the runs it trained to completion
  (``best_so_far``), and that decides when later runs stop, so a call's result depends on the calls
  before it. ``search.run`` resumes from its JSONL log without calling the estimator for logged
  evaluations; call :meth:`restore` with that log (the ``workdir``, the file, or the records) before a
  resumed ``search.run`` and the estimator continues from the same state as the uninterrupted search.
  """
  jittable = False
  num_fidelities = 1
  name = "early_stopping"

  def __init__(self, make_run: Callable, epochs: int, *, threshold: float = 0.05,
               min_epochs: int | None = None, check_every: int = 1, model: CurveModel | None = None):
    if not callable(make_run):
      raise NasjaxError("make_run must be a function (arch, key) -> (state, epoch_fn)")
    self.make_run = make_run
    self.epochs = _check_int("epochs", epochs, 1)
    self.threshold = threshold
    self.min_epochs = min_epochs
    self.check_every = check_every
    self.model = model or CurveModel()
    self.best_so_far = float("nan")
    self.epochs_used = 0
    self.epochs_saved = 0

  def __call__(self, arch, key) -> dict:
    state, epoch_fn = self.make_run(arch, key)
    best_before = self.best_so_far
    result = early_stopping_trainer(epoch_fn, state, epochs=self.epochs, best_so_far=best_before,
                                    threshold=self.threshold, min_epochs=self.min_epochs,
                                    check_every=self.check_every, model=self.model)
    self.epochs_used += result.epochs_run
    self.epochs_saved += result.epochs_saved
    observed = result.curve[-1]
    if result.failed:
      accuracy = float("nan")
    elif result.stopped_early:
      accuracy = result.predicted_final
    else:
      accuracy = observed
      self.best_so_far = observed if not math.isfinite(self.best_so_far) else max(self.best_so_far, observed)
    return {"accuracy": accuracy, "observed_accuracy": observed, "epochs": result.epochs_run,
            "epochs_saved": result.epochs_saved, "stopped_early": result.stopped_early,
            "probability_to_beat": result.probability, "best_so_far": best_before,
            "curve": [float(v) for v in result.curve]}

  def restore(self, log: Any) -> None:
    """Sets ``best_so_far`` (and the compute counters) from a search log: a ``search.run`` workdir, an
    ``evaluations.jsonl`` path, or a list of its records. The file is read as JSON only."""
    if isinstance(log, (str, os.PathLike)):
      path = os.path.join(log, "evaluations.jsonl") if os.path.isdir(log) else os.fspath(log)
      if not os.path.exists(path):
        raise NasjaxError(f"no search log at {path}; pass a search workdir or its evaluations.jsonl")
      records = []
      with open(path) as f:
        for line in f:
          try:
            records.append(json.loads(line))
          except json.JSONDecodeError:
            break  # a line cut by a killed process; search.run redoes it as well
    else:
      records = list(log)
    best, used, saved = float("nan"), 0, 0
    for r in records:
      m = r.get("metrics", {}) if isinstance(r, dict) else {}
      if not isinstance(m, dict) or "observed_accuracy" not in m:
        raise NasjaxError("restore: the log was not written by an EarlyStoppingEstimator (a record lacks "
                          "metrics.observed_accuracy)")
      used += int(m.get("epochs", 0))
      saved += int(m.get("epochs_saved", 0))
      value = m["observed_accuracy"]
      if not r.get("failed") and not m.get("stopped_early") and value is not None and math.isfinite(value):
        best = value if not math.isfinite(best) else max(best, value)
    self.best_so_far, self.epochs_used, self.epochs_saved = best, used, saved


# ---------------------------------------------------------------------------------------------- training
def make_epoch_fn(model_fn, variables: dict, cfg, x_train, y_train, x_valid, y_valid, *, mean, std,
                  seed: int = 0, mesh=None, extra=None, programs: tuple | None = None):
  """``(state, epoch_fn)`` for :func:`early_stopping_trainer` on top of the engine (:mod:`nasjax.training`).

  ``variables`` are the starting weights (fresh or inherited); ``cfg`` is a training config
  (:func:`nasjax.estimators.train.short_training_config` has every field) whose ``epochs`` sets the
  learning-rate schedule. ``epoch_fn(state, epoch)`` trains epoch ``epoch`` and returns the validation
  accuracy; a loss that becomes NaN/Inf returns NaN instead of raising.

  ``extra`` is the train state's ``extra`` (the architecture, for a network that takes it as data).
  ``programs`` is ``(optimizer, train step, eval step)`` for ``model_fn`` and ``cfg`` built once by the
  caller (:meth:`nasjax.estimators.train.TrainingEstimator.programs`): runs that share them share one
  compiled program. Without them each call builds, and so compiles, its own.
  """
  from nasjax import data as nasdata  # imported here: the curve fitting itself needs no training stack
  from nasjax.training import (evaluate, make_eval_step, make_optimizer, make_train_step, run_epochs,
                               state_from_variables)

  mesh = mesh or nasdata.data_mesh()
  batcher = nasdata.Batcher(x_train, np.asarray(y_train, np.int32), cfg.batch_size, seed=seed)
  if programs is None:
    tx = make_optimizer(cfg, batcher.steps_per_epoch)
    programs = (tx, make_train_step(model_fn, tx, cfg, mean, std), make_eval_step(model_fn, mean, std))
  tx, train_step, eval_step = programs
  state = nasdata.replicate(state_from_variables(variables, tx, seed, extra), mesh)
  y_valid = np.asarray(y_valid, np.int32)

  def epoch_fn(state, epoch):
    try:
      state, _ = run_epochs(train_step, None, state, batcher, cfg, mesh, start_epoch=epoch, stop_after=1,
                            show_progress=False)
    except DivergenceError:
      # The diverged state's buffers were donated to the failing step: hand back nothing.
      return None, float("nan")
    return state, float(evaluate(eval_step, state, x_valid, y_valid, cfg.eval_batch_size, mesh)["accuracy"])

  return state, epoch_fn
