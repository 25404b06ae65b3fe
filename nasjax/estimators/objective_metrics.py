"""Objectives beside accuracy: measured latency, peak activation memory, robustness to corruption and attack.

Multi-objective NAS scores an architecture on several metrics at once (:mod:`nasjax.objectives`). This
module measures the ones a metrics dict lacks:

* ``latency_s`` / ``latency_batch_s``: the median wall time of the jitted forward pass on the current
  default device at batch 1 and at a user batch, after warm-up calls (compilation is never timed), each
  call ending in ``block_until_ready`` (:func:`nasjax.estimators.cost.measure_latency_ms`). As in
  :mod:`nasjax.estimators.cost`, the network runs on zero-filled variables of the right shapes: latency
  does not depend on the weights' values (denormals aside).
* ``peak_activation_bytes``: from XLA's buffer assignment of the compiled forward pass at the user batch
  (``jax.jit(f).lower(...).compile().memory_analysis()``): its temporary buffers plus its output, i.e.
  what the activations need beyond the parameters and the input, with XLA's buffer reuse. Where a
  backend gives no memory analysis, an estimate replaces it: the bytes of every intermediate value of the
  forward pass's jaxpr summed (an upper bound, no reuse). ``peak_activation_source`` says which
  (``"xla_memory_analysis"`` or ``"jaxpr_intermediates_sum"``).
* robustness of a trained ``model_fn`` (:mod:`nasjax.training.model`): accuracy under common corruptions
  (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
  Perturbations", ICLR 2019: Gaussian noise, Gaussian blur, contrast, at severities 1-5 with their
  CIFAR-10-C parameters), and under L-infinity attacks: FGSM (Goodfellow, Shlens & Szegedy, "Explaining
  and Harnessing Adversarial Examples", ICLR 2015) and PGD with a random start (Madry et al., "Towards
  Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018). Images are in [0, 1] before the
  model's normalisation, so severities and ``epsilon`` (e.g. 8/255) mean what the papers mean.

:func:`forward_estimator` builds the hardware metrics of a space's architectures; :func:`with_metrics`
merges several estimators' dicts into one (e.g. a table's accuracy and this device's latency), so any
of them can be named as an objective.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.estimators.base import FunctionEstimator
from nasjax.estimators.cost import measure_latency_ms

# Hendrycks & Dietterich (2019), CIFAR-10-C parameters per severity 1..5 (images in [0, 1]).
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast")
# The corruptions robustness_metrics applies by default: each kind at the middle of its five severities.
DEFAULT_CORRUPTIONS = (("gaussian_noise", 3), ("gaussian_blur", 3), ("contrast", 3))


# ------------------------------------------------------------------------------------------ hardware
def peak_activation_bytes(fn: Callable, *args) -> tuple[int, str]:
  """(bytes, source) of the activations of ``jax.jit(fn)(*args)``; see the module docstring."""
  compiled = jax.jit(fn).lower(*args).compile()
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError, jax.errors.JaxRuntimeError):
    stats = None
  if stats is not None and hasattr(stats, "temp_size_in_bytes"):
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes), "xla_memory_analysis"
  closed = jax.make_jaxpr(fn)(*args)
  total = 0
  for eqn in _equations(closed.jaxpr):
    for var in eqn.outvars:
      aval = var.aval
      if hasattr(aval, "shape") and hasattr(aval, "dtype"):
        total += int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize
  return total, "jaxpr_intermediates_sum"


def _equations(jaxpr):
  """Every equation of ``jaxpr`` and of the jaxprs in its equations' parameters (jit, scan, cond, ...),
  leaving out the call equations themselves, whose outputs are their bodies' last values."""
  for eqn in jaxpr.eqns:
    subs = [sub for value in eqn.params.values() for sub in (value if isinstance(value, (tuple, list)) else (value,))
            if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns")]
    if not subs:
      yield eqn
    for sub in subs:
      yield from _equations(sub if hasattr(sub, "eqns") else sub.jaxpr)


FORWARD_METRICS = ("latency_s", "latency_batch_s", "latency_batch_size", "peak_activation_bytes",
                   "peak_activation_source")


def forward_metrics(apply_fn: Callable, variables: Any, input_shape: Sequence[int], *, batch_size: int = 64,
                    runs: int = 10, warmup: int = 2, clock: Callable[[], float] = time.perf_counter) -> dict:
  """``latency_s`` (batch 1), ``latency_batch_s`` (``batch_size``), ``peak_activation_bytes`` (at
  ``batch_size``) and its source, for ``apply_fn(variables, x) -> logits`` on NHWC ``input_shape``."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise NasjaxError(f"batch_size must be a positive integer; got {batch_size!r}")
  shape = tuple(int(d) for d in input_shape)
  forward = jax.jit(apply_fn)
  one = jnp.zeros((1,) + shape, jnp.float32)
  batch = jnp.zeros((batch_size,) + shape, jnp.float32)
  memory, source = peak_activation_bytes(apply_fn, variables, batch)
  timing = dict(runs=runs, warmup=warmup, clock=clock)
  return {"latency_s": measure_latency_ms(forward, variables, one, **timing) / 1e3,
          "latency_batch_s": measure_latency_ms(forward, variables, batch, **timing) / 1e3,
          "latency_batch_size": batch_size, "peak_activation_bytes": memory, "peak_activation_source": source}


def forward_estimator(space, *, input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10,
                      channels: int | None = None, layers: int | None = None, batch_size: int = 64,
                      runs: int = 10, warmup: int = 2,
                      clock: Callable[[], float] = time.perf_counter) -> DeclaredEstimator:
  """``(arch, key) -> {"latency_s", "latency_batch_s", "peak_activation_bytes", ...}`` on this device (host).

  Latency is wall time by default; ``clock=time.process_time`` times this process's CPU instead, which
  other work on a shared host does not inflate (:func:`nasjax.estimators.cost.measure_latency_ms`).

  The network of an architecture is the one :func:`nasjax.estimators.cost.cost_estimator` builds (NB201:
  the benchmark network, ``channels`` 16 and ``layers`` 5 cells per stage by default; cell spaces: the
  ``Network`` of the genotype, 36 channels and 20 cells, no auxiliary head), on zero-filled variables.
  Each new architecture compiles its own forward pass. The key is unused.
  """
  from nasjax.nn.nb201_network import NB201Network
  from nasjax.nn.network import Network
  from nasjax.spaces.nb201 import NB201Space
  shape = tuple(int(d) for d in input_shape)
  if isinstance(space, NB201Space):
    def build(arch):
      genotype = tuple(int(v) for v in space.check(arch))
      return NB201Network(channels or 16, 5 if layers is None else layers, num_classes, genotype=genotype)
  elif hasattr(space, "decode"):
    def build(arch):
      return Network(space.decode(space.check(arch)), channels=channels or 36,
                     layers=20 if layers is None else layers, num_classes=num_classes)
  else:
    raise NasjaxError(f"forward_estimator builds networks for the NB201 space and cell spaces (darts, nasnet, "
                      f"enas_micro); got {getattr(space, 'name', type(space).__name__)!r}")

  def estimate(arch, key) -> dict:
    del key
    model = build(np.asarray(arch))
    one = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init({"params": k, "dropout": k}, x, train=False),
                            jax.random.key(0), one)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def apply(variables, x):
      out = model.apply(variables, x, train=False)
      return out[0] if isinstance(out, tuple) else out  # Network returns (logits, aux)

    return forward_metrics(apply, zeros, shape, batch_size=batch_size, runs=runs, warmup=warmup, clock=clock)

  return DeclaredEstimator(estimate, "device", FORWARD_METRICS)


class DeclaredEstimator(FunctionEstimator):
  """A host (not jittable) estimator that says which metrics it returns (``metric_names``), so objectives
  naming them are checked before a search runs."""

  def __init__(self, fn: Callable, name: str, metric_names: Sequence[str]):
    super().__init__(fn, False, 1, name)
    object.__setattr__(self, "metric_names", tuple(metric_names))


class MergedEstimator:
  """Several estimators' metrics in one dict (the first one's values win on a repeated name); each gets
  its own key, folded from the caller's. Jittable when all of them are."""

  def __init__(self, estimators: Sequence[Callable]):
    if not estimators:
      raise NasjaxError("with_metrics needs at least one estimator")
    self.estimators = tuple(estimators)
    self.jittable = all(getattr(e, "jittable", False) for e in self.estimators)
    self.num_fidelities = 1
    self.name = "+".join(getattr(e, "name", getattr(e, "__name__", "estimator")) for e in self.estimators)
    names = [getattr(e, "metric_names", None) for e in self.estimators]
    if all(n is not None for n in names):
      self.metric_names = tuple(dict.fromkeys(n for group in names for n in group))

  def __call__(self, arch, key) -> dict:
    out = {}
    for i, estimator in enumerate(self.estimators):
      for k, v in estimator(arch, jax.random.fold_in(key, i)).items():
        out.setdefault(k, v)
    return out


def with_metrics(*estimators: Callable) -> MergedEstimator:
  """One estimator returning the union of the metrics of ``estimators`` (see :class:`MergedEstimator`)."""
  return MergedEstimator(estimators)


# ------------------------------------------------------------------------------------------ robustness
def _check_severity(severity: int) -> int:
  if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
    raise NasjaxError(f"a corruption severity is an integer in 1..5; got {severity!r}")
  return severity


def _gaussian_kernel(sigma: float) -> np.ndarray:
  radius = max(1, int(math.ceil(3 * sigma)))
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def corrupt(images: jax.Array, key: jax.Array, kind: str, severity: int) -> jax.Array:
  """``images`` (NHWC in [0, 1]) under one common corruption at ``severity`` 1..5, clipped to [0, 1]."""
  severity = _check_severity(severity)
  images = jnp.asarray(images, jnp.float32)
  if kind == "gaussian_noise":
    noisy = images + GAUSSIAN_NOISE_STD[severity - 1] * jax.random.normal(key, images.shape)
  elif kind == "gaussian_blur":
    k = jnp.asarray(_gaussian_kernel(GAUSSIAN_BLUR_SIGMA[severity - 1]))
    r = (k.shape[0] - 1) // 2
    padded = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    h, w = images.shape[1:3]
    # Separable blur: rows, then columns, as sums of shifted slices (no convolution kernel to compile).
    rows = sum(k[i] * padded[:, i:i + h, :, :] for i in range(k.shape[0]))
    noisy = sum(k[i] * rows[:, :, i:i + w, :] for i in range(k.shape[0]))
  elif kind == "contrast":
    mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
    noisy = (images - mean) * CONTRAST_FACTOR[severity - 1] + mean
  else:
    raise NasjaxError(f"unknown corruption {kind!r}; accepted: {', '.join(CORRUPTIONS)}")
  return jnp.clip(noisy, 0.0, 1.0)


def _loss_grad(logits_fn: Callable, images: jax.Array, labels: jax.Array) -> jax.Array:
  def loss(x):
    logits = logits_fn(x)
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
  return jax.grad(loss)(images)


def fgsm(logits_fn: Callable, images: jax.Array, labels: jax.Array, epsilon: float) -> jax.Array:
  """FGSM: one signed-gradient step of size ``epsilon`` up the cross-entropy, clipped to [0, 1]."""
  images = jnp.asarray(images, jnp.float32)
  return jnp.clip(images + epsilon * jnp.sign(_loss_grad(logits_fn, images, labels)), 0.0, 1.0)


def pgd(logits_fn: Callable, images: jax.Array, labels: jax.Array, key: jax.Array, epsilon: float,
        steps: int = 10, step_size: float | None = None) -> jax.Array:
  """PGD (L-infinity): a uniform random start in the epsilon-ball, then ``steps`` signed-gradient steps
  of ``step_size`` (default 2.5 * epsilon / steps, Madry et al.), each projected back onto the ball and
  [0, 1]."""
  images = jnp.asarray(images, jnp.float32)
  step_size = 2.5 * epsilon / steps if step_size is None else step_size
  start = jnp.clip(images + jax.random.uniform(key, images.shape, minval=-epsilon, maxval=epsilon), 0.0, 1.0)

  def step(x, _):
    x = x + step_size * jnp.sign(_loss_grad(logits_fn, x, labels))
    return jnp.clip(jnp.clip(x, images - epsilon, images + epsilon), 0.0, 1.0), None

  adversarial, _ = jax.lax.scan(step, start, None, length=steps)
  return adversarial


def robustness_metrics(model_fn: Callable, variables: Any, images: jax.Array, labels: jax.Array,
                       key: jax.Array, *, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
                       corruptions: Sequence[tuple[str, int]] = DEFAULT_CORRUPTIONS,
                       epsilon: float = 8 / 255, pgd_steps: int = 10, extra: Any = None) -> dict:
  """Accuracies of a trained ``model_fn`` (the engine's contract, evaluated with ``train=False``) on
  ``images`` (NHWC in [0, 1]) clean, under each corruption, and under FGSM and PGD at ``epsilon``.

  Returns ``accuracy_clean``, ``accuracy_<kind>_s<severity>`` per corruption, ``accuracy_corrupted``
  (their mean), and with ``epsilon > 0`` ``accuracy_fgsm`` and ``accuracy_pgd``. Pure and jittable for
  fixed settings (``jax.jit(functools.partial(robustness_metrics, model_fn, ...))``).
  """
  if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and 0 <= epsilon <= 1):
    raise NasjaxError(f"epsilon is an L-infinity radius in [0, 1] on images in [0, 1]; got {epsilon!r}")
  if isinstance(pgd_steps, bool) or not isinstance(pgd_steps, int) or pgd_steps < 1:
    raise NasjaxError(f"pgd_steps must be a positive integer; got {pgd_steps!r}")
  corruptions = tuple((kind, _check_severity(sev)) for kind, sev in corruptions)
  for kind, _ in corruptions:
    if kind not in CORRUPTIONS:
      raise NasjaxError(f"unknown corruption {kind!r}; accepted: {', '.join(CORRUPTIONS)}")
  mean_a, std_a = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)

  def logits_fn(x):
    logits, _, _ = model_fn(variables, (x - mean_a) / std_a, train=False, rng=None, drop_path_prob=0.0,
                            extra=extra)
    return logits

  def accuracy(x):
    return jnp.mean(jnp.argmax(logits_fn(x), axis=-1) == labels)

  keys = jax.random.split(key, len(corruptions) + 1)
  out = {"accuracy_clean": accuracy(images)}
  corrupted = []
  for (kind, severity), k in zip(corruptions, keys[:-1]):
    corrupted.append(accuracy(corrupt(images, k, kind, severity)))
    out[f"accuracy_{kind}_s{severity}"] = corrupted[-1]
  if corrupted:
    out["accuracy_corrupted"] = jnp.mean(jnp.stack(corrupted))
  if epsilon > 0:
    out["accuracy_fgsm"] = accuracy(fgsm(logits_fn, images, labels, epsilon))
    out["accuracy_pgd"] = accuracy(pgd(logits_fn, images, labels, keys[-1], epsilon, pgd_steps))
  return out


def robustness_metric_names(corruptions: Sequence[tuple[str, int]] = DEFAULT_CORRUPTIONS,
                            epsilon: float = 8 / 255) -> tuple[str, ...]:
  """The keys :func:`robustness_metrics` returns for these settings, known before anything is trained, so
  objectives naming them are checked before a search starts."""
  names = ["accuracy_clean"] + [f"accuracy_{kind}_s{severity}" for kind, severity in corruptions]
  if corruptions:
    names.append("accuracy_corrupted")
  if epsilon > 0:
    names += ["accuracy_fgsm", "accuracy_pgd"]
  return tuple(names)


__all__ = ["CORRUPTIONS", "DEFAULT_CORRUPTIONS", "DeclaredEstimator", "FORWARD_METRICS", "MergedEstimator", "corrupt", "fgsm",
           "forward_estimator", "forward_metrics",
           "peak_activation_bytes", "pgd", "robustness_metric_names", "robustness_metrics", "with_metrics"]
