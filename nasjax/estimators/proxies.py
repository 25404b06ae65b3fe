"""Zero-cost proxies: score an architecture from its randomly initialised network and one batch.

Each proxy is a pure function ``proxy(apply_fn, params, batch)`` of a function ``apply_fn(params, x) ->
logits``, its parameters and a batch ``(x, y)``, so it works on any model: :func:`as_apply_fn` turns a
Flax module of nasjax (``Network``, ``Supernet`` with a discrete architecture, ``NB201Network``) into
that form. Proxies that sum "per weight" scores use the weights of convolutions and dense layers only
(leaves named ``kernel``), as Abdelfattah et al. do; ``weights=`` chooses other leaves.

* ``grad_norm``: the sum over weight tensors of the L2 norm of the cross-entropy gradient (Abdelfattah et
  al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021).
* ``snip``: the sum of the connection sensitivities ``|theta * dL/dtheta|`` (Lee, Ajanthan & Torr,
  "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019).
* ``synflow``: the sum of ``theta * dR/dtheta`` where ``R = 1^T f(1)`` is the output of the network with
  every parameter replaced by its absolute value on an all-ones input of batch 1 (Tanaka, Kunin, Yamins &
  Ganguli, "Pruning neural networks without any data by iteratively conserving synaptic flow", NeurIPS
  2020; as a NAS proxy by Abdelfattah et al.). BN must be in evaluation mode (at initialisation it is then
  the identity up to sqrt(1 + eps)); Abdelfattah et al. remove it. ``R`` grows exponentially with depth
  and overflows float32; instead of switching to float64 (available when ``jax_enable_x64`` is on) we
  use that the linearised network is positively homogeneous: scaling the input by ``a`` and the output
  cotangent by ``b`` scales every term by ``a * b``. With ``a`` and ``b`` powers of two picked from a
  first forward pass, all intermediate values stay near 1 and the scaling is exact; the log of the score
  is then ``log(scaled score) - log(a * b)``. This assumes additive parameters (biases, BN means) are
  zero, true at initialisation; pass ``rescale=False`` otherwise.
* ``jacob_cov``: ``-sum(log(l + k) + 1 / (l + k))`` over the eigenvalues ``l`` of the correlation matrix
  of the per-example input gradients of the summed output, ``k = 1e-5`` (Mellor, Turner, Storkey &
  Crowley, "Neural Architecture Search without Training", arXiv:2006.04647 v1, 2020; the form of
  Abdelfattah et al.).
* ``naswot``: ``log |K_H|``, ``K_H[i, j]`` = number of ReLU units on which examples ``i`` and ``j`` agree
  (both active or both inactive) (Mellor et al., "Neural Architecture Search without Training", ICML
  2021). The ReLUs are found in the traced program (every ``jax.nn.relu``, also inside ``lax.switch``
  branches, where only the chosen branch counts, jitted calls and scans), so no model needs hooks.

:func:`proxy_estimator` builds the ``(arch, key) -> {"score"}`` estimator of the NAS-Bench-201 space (and
of the ENAS macro space, with ``EnasMacroNetwork``): it initialises the network with the key and scores
it, in one program that jits and vmaps over a population of architectures.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.extend import core as jex_core

from nasjax.errors import NasjaxError
from nasjax.estimators.base import as_estimator
from nasjax.nn.enas_macro_network import EnasMacroNetwork
from nasjax.nn.init import draw_variables
from nasjax.nn.nb201_network import NB201Network
from nasjax.spaces.enas_macro import EnasMacroSpace
from nasjax.spaces.nb201 import NB201_EDGES, NB201Space

ApplyFn = Callable[[Any, jax.Array], jax.Array]
JACOB_COV_K = 1e-5


# ---------------------------------------------------------------------------------------------- helpers
def as_apply_fn(model, variables, *model_args, train: bool = True, rngs=None, **model_kwargs):
  """``(apply_fn, params)`` for a Flax module called as ``model.apply(variables, x, *model_args, ...)``.

  ``apply_fn(params, x)`` returns the logits (the first output of a model returning a tuple, as
  ``Network`` does). In training mode BN normalises with the batch's statistics and the updated running
  statistics are dropped; other collections of ``variables`` are held fixed.
  """
  if "params" not in variables:
    raise NasjaxError(f"variables must hold a 'params' collection; got {sorted(variables)}")
  rest = {k: v for k, v in variables.items() if k != "params"}

  def apply_fn(params, x):
    full = {**rest, "params": params}
    if train and rest:
      out, _ = model.apply(full, x, *model_args, train=True, rngs=rngs, mutable=list(rest), **model_kwargs)
    else:
      out = model.apply(full, x, *model_args, train=train, rngs=rngs, **model_kwargs)
    return out[0] if isinstance(out, tuple) else out

  return apply_fn, variables["params"]


def is_weight(path) -> bool:
  """Default ``weights=`` selector: convolution and dense kernels."""
  return bool(path) and getattr(path[-1], "key", None) == "kernel"


def _split_batch(batch, need_labels: bool):
  if isinstance(batch, (tuple, list)):
    if len(batch) != 2:
      raise NasjaxError(f"a batch is (inputs, labels) or inputs alone; got a sequence of {len(batch)}")
    x, y = batch
  else:
    x, y = batch, None
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise NasjaxError(f"batch inputs need a leading batch axis; got shape {x.shape}")
  if need_labels:
    if y is None:
      raise NasjaxError("this proxy needs labels: pass the batch as (inputs, labels)")
    y = jnp.asarray(y)
    if y.shape != x.shape[:1] or not jnp.issubdtype(y.dtype, jnp.integer):
      raise NasjaxError(f"labels must be integer class indices of shape {x.shape[:1]}; got {y.dtype} "
                        f"{y.shape}")
  return x, y


def _selected(tree, weights: Callable) -> list[jax.Array]:
  return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if weights(path)]


def _mean_cross_entropy(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _loss_grads(apply_fn, params, batch):
  x, y = _split_batch(batch, need_labels=True)
  return jax.grad(lambda p: _mean_cross_entropy(apply_fn(p, x), y))(params)


def _grad_norm_of(grads, weights: Callable) -> jax.Array:
  return sum((jnp.sqrt(jnp.sum(jnp.square(g))) for g in _selected(grads, weights)), jnp.float32(0))


def _snip_of(params, grads, weights: Callable) -> jax.Array:
  terms = zip(_selected(params, weights), _selected(grads, weights))
  return sum((jnp.sum(jnp.abs(w * g)) for w, g in terms), jnp.float32(0))


def _jacob_cov_of(jacobian, k: float) -> jax.Array:
  eig = jnp.linalg.eigvalsh(correlation(jacobian))
  return -jnp.sum(jnp.log(eig + k) + 1.0 / (eig + k))


# ---------------------------------------------------------------------------------------------- proxies
def grad_norm(apply_fn: ApplyFn, params, batch, *, weights: Callable = is_weight) -> jax.Array:
  """Sum over weight tensors of ``||dL/dW||_2`` (mean cross-entropy over the batch)."""
  return _grad_norm_of(_loss_grads(apply_fn, params, batch), weights)


def snip(apply_fn: ApplyFn, params, batch, *, weights: Callable = is_weight) -> jax.Array:
  """Sum of SNIP's connection sensitivities ``|W * dL/dW|`` over the weights."""
  return _snip_of(params, _loss_grads(apply_fn, params, batch), weights)


def synflow(apply_fn: ApplyFn, params, batch, *, weights: Callable = is_weight, log: bool = False,
            rescale: bool = True, dtype=None) -> jax.Array:
  """SynFlow score, or its natural log with ``log=True`` (finite where the score overflows).

  ``apply_fn`` must run BN in evaluation mode and treat a batch's examples independently (the rescaling's
  three probes run as one batch of three). ``dtype`` defaults to float64 when ``jax_enable_x64``
  is on, else float32; ``rescale`` is the exact power-of-two rescaling of the module docstring. A
  network whose output does not depend on its parameters (e.g. every NB201 edge ``none``) scores 0
  (log: -inf).
  """
  x, _ = _split_batch(batch, need_labels=False)
  if dtype is None:
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  abs_params = jax.tree.map(
      lambda p: jnp.abs(p).astype(dtype) if jnp.issubdtype(jnp.asarray(p).dtype, jnp.floating) else p,
      params)
  ones = jnp.ones((1,) + x.shape[1:], dtype)

  def total(p, scale):
    return jnp.sum(apply_fn(p, ones * scale))

  if rescale:
    # Probe R at tiny inputs: R is linear in the input, so log2 R follows without overflow. The least
    # extreme probe that stays finite wins (the smallest inputs risk underflow in shrinking layers).
    # One forward pass of a batch of the three probes: a third of the program of three passes.
    probes = (120, 72, 24)
    scales = jnp.asarray([2.0 ** -p for p in probes], dtype).reshape((len(probes),) + (1,) * (x.ndim - 1))
    totals = jnp.sum(apply_fn(abs_params, jnp.ones((len(probes),) + x.shape[1:], dtype) * scales)
                     .reshape(len(probes), -1), axis=1)
    log2_r = jnp.zeros((), dtype)
    for i, probe in enumerate(probes):
      estimate = jnp.log2(totals[i]) + probe
      log2_r = jnp.where(jnp.isfinite(estimate), estimate, log2_r)
    in_exp = jnp.floor(log2_r / 2)
    out_exp = jnp.floor(log2_r) - in_exp
  else:
    in_exp = out_exp = jnp.zeros((), dtype)
  in_scale, out_scale = jnp.exp2(-in_exp).astype(dtype), jnp.exp2(-out_exp).astype(dtype)
  grads = jax.grad(lambda p: total(p, in_scale) * out_scale)(abs_params)
  terms = zip(_selected(abs_params, weights), _selected(grads, weights))
  scaled = sum((jnp.sum(w * g) for w, g in terms), jnp.zeros((), dtype))
  log_score = jnp.log(scaled) + (in_exp + out_exp) * jnp.log(jnp.asarray(2.0, dtype))
  return log_score if log else jnp.exp(log_score)


def input_jacobian(apply_fn: ApplyFn, params, x) -> jax.Array:
  """``[B, D]``: gradient of the summed outputs with respect to each example's input."""
  x = jnp.asarray(x)
  return jax.grad(lambda inp: jnp.sum(apply_fn(params, inp)))(x).reshape(x.shape[0], -1)


def correlation(rows: jax.Array) -> jax.Array:
  """Pearson correlation matrix of the rows (as ``np.corrcoef``), clipped to [-1, 1]."""
  centred = rows - jnp.mean(rows, axis=1, keepdims=True)
  cov = centred @ centred.T
  d = jnp.sqrt(jnp.diag(cov))
  return jnp.clip(cov / (d[:, None] * d[None, :]), -1.0, 1.0)


def jacob_cov(apply_fn: ApplyFn, params, batch, *, k: float = JACOB_COV_K) -> jax.Array:
  """Mellor et al. (2020, v1): ``-sum(log(l + k) + 1/(l + k))`` over eigenvalues of the Jacobian
  correlation matrix; NaN (a failed evaluation) when an example's Jacobian is constant."""
  x, _ = _split_batch(batch, need_labels=False)
  return _jacob_cov_of(input_jacobian(apply_fn, params, x), k)


def naswot(apply_fn: ApplyFn, params, batch) -> jax.Array:
  """Mellor et al. (ICML 2021): log-determinant of the Hamming kernel of the ReLU activation codes."""
  x, _ = _split_batch(batch, need_labels=False)
  _, logdet = jnp.linalg.slogdet(relu_hamming_kernel(apply_fn, params, x))
  return logdet


def relu_hamming_kernel(apply_fn: ApplyFn, params, x) -> jax.Array:
  """``K[i, j]``: ReLU units on which examples i and j agree, summed over every ReLU that runs.

  A unit is active where the ReLU's input is > 0. ReLUs whose input has no leading batch axis (e.g.
  inside a ``vmap`` over edges) are an error; ReLUs inside ``while`` loops are not seen.
  """
  x = jnp.asarray(x)
  batch = x.shape[0]

  def tap(pre):
    if pre.ndim == 0 or pre.shape[0] != batch:
      raise NasjaxError(f"naswot: a ReLU input of shape {pre.shape} has no leading batch axis of size "
                        f"{batch}; the proxy needs batch-major activations")
    codes = (pre.reshape(batch, -1) > 0).astype(jnp.float32)
    return codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T

  closed = jax.make_jaxpr(apply_fn)(params, x)
  args = jax.tree.leaves((params, x))
  _, kernel = _eval_tapping_relus(closed.jaxpr, closed.consts, args, tap,
                                  jnp.zeros((batch, batch), jnp.float32))
  return kernel


# ------------------------------------------------------------------------------ ReLU-tapping evaluator
def _sub_jaxpr(value):
  """(jaxpr, consts) of a ClosedJaxpr or a bare Jaxpr parameter, else None."""
  if isinstance(value, jex_core.ClosedJaxpr):
    return value.jaxpr, value.consts
  if isinstance(value, jex_core.Jaxpr):
    return value, ()
  return None


def _eval_tapping_relus(jaxpr, consts, args, tap, acc):
  """Evaluates ``jaxpr`` and returns ``(outputs, acc + sum of tap(x) over every ReLU input x)``.

  ``acc`` has a fixed shape, so a ``cond`` can return each branch's sum from the branch itself (only the
  chosen branch counts, and the architecture index may be a tracer) and a ``scan`` can carry it.
  """
  env: dict = {}

  def read(v):
    return v.val if isinstance(v, jex_core.Literal) else env[v]

  def write(v, value):
    if not isinstance(v, jex_core.DropVar):
      env[v] = value

  for v, c in zip(jaxpr.constvars, consts):
    write(v, c)
  for v, a in zip(jaxpr.invars, args):
    write(v, a)

  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name == "cond":
      outs, acc = _cond(eqn, invals, tap, acc)
    elif name == "scan":
      outs, acc = _scan(eqn, invals, tap, acc)
    elif name != "while" and any(_sub_jaxpr(eqn.params.get(k)) for k in ("jaxpr", "call_jaxpr")):
      # Call-like primitives (jit, custom_jvp/vjp calls, remat): their body runs on the same operands.
      if name == "custom_jvp_call" and _computes_relu(eqn.params["call_jaxpr"]):
        acc = acc + tap(invals[0])
      key = "jaxpr" if _sub_jaxpr(eqn.params.get("jaxpr")) else "call_jaxpr"
      sub, sub_consts = _sub_jaxpr(eqn.params[key])
      outs, acc = _eval_tapping_relus(sub, sub_consts, invals, tap, acc)
    else:
      outs = _bind(eqn, invals)
      if not eqn.primitive.multiple_results:
        outs = [outs]
    for v, value in zip(eqn.outvars, outs):
      write(v, value)
  return [read(v) for v in jaxpr.outvars], acc


def _computes_relu(closed) -> bool:
  """Whether a custom_jvp body is ``jax.nn.relu``: ``max(x, 0)``, possibly inside a jit."""
  jaxpr = closed.jaxpr
  while len(jaxpr.eqns) == 1 and _sub_jaxpr(jaxpr.eqns[0].params.get("jaxpr")):
    jaxpr = _sub_jaxpr(jaxpr.eqns[0].params["jaxpr"])[0]
  if len(jaxpr.eqns) != 1 or jaxpr.eqns[0].primitive.name != "max":
    return False
  return any(isinstance(v, jex_core.Literal) and np.all(np.asarray(v.val) == 0) for v in jaxpr.eqns[0].invars)


def _bind(eqn, invals):
  bind_params = eqn.primitive.get_bind_params(eqn.params)
  subfuns = ()
  if isinstance(bind_params, tuple):  # older JAX returns (subfuns, params)
    subfuns, bind_params = bind_params
  return eqn.primitive.bind(*subfuns, *invals, **bind_params)


def _cond(eqn, invals, tap, acc):
  index, operands = invals[0], invals[1:]
  zero = jnp.zeros_like(acc)

  def branch_fn(closed):
    def run(*ops):
      outs, branch_acc = _eval_tapping_relus(closed.jaxpr, closed.consts, ops, tap, zero)
      return list(outs), branch_acc
    return run

  outs, branch_acc = lax.switch(index, [branch_fn(b) for b in eqn.params["branches"]], *operands)
  return outs, acc + branch_acc


def _scan(eqn, invals, tap, acc):
  p = eqn.params
  n_consts, n_carry = p["num_consts"], p["num_carry"]
  consts, init, xs = invals[:n_consts], invals[n_consts:n_consts + n_carry], invals[n_consts + n_carry:]
  body_jaxpr, body_consts = _sub_jaxpr(p["jaxpr"])

  def body(carry, x_t):
    state, total = carry
    outs, total = _eval_tapping_relus(body_jaxpr, body_consts, [*consts, *state, *x_t], tap, total)
    return (outs[:n_carry], total), outs[n_carry:]

  (final, acc), ys = lax.scan(body, (list(init), acc), list(xs), length=p["length"], reverse=p["reverse"],
                              unroll=p.get("unroll", 1))
  return [*final, *ys], acc


def _train_mode_scores(apply_fn, params, x, y, names) -> dict:
  """grad_norm, snip and jacob_cov among ``names`` from one forward pass: the loss gradient and the input
  Jacobian are two pullbacks of the same linearisation (each proxy alone traces its own forward pass)."""
  wanted = [n for n in ("grad_norm", "snip", "jacob_cov") if n in names]
  if not wanted:
    return {}
  logits, pullback = jax.vjp(apply_fn, params, x)
  scores = {}
  if "grad_norm" in wanted or "snip" in wanted:
    grads = pullback(jax.grad(_mean_cross_entropy)(logits, y))[0]
    if "grad_norm" in wanted:
      scores["grad_norm"] = _grad_norm_of(grads, is_weight)
    if "snip" in wanted:
      scores["snip"] = _snip_of(params, grads, is_weight)
  if "jacob_cov" in wanted:
    jacobian = pullback(jnp.ones_like(logits))[1].reshape(x.shape[0], -1)
    scores["jacob_cov"] = _jacob_cov_of(jacobian, JACOB_COV_K)
  return scores


PROXIES: dict[str, Callable] = {
    "synflow": synflow,
    "grad_norm": grad_norm,
    "snip": snip,
    "jacob_cov": jacob_cov,
    "naswot": naswot,
}


# ---------------------------------------------------------------------------------------------- estimator
def proxy_estimator(space, name: str | Sequence[str], batch, *, channels: int = 16, cells_per_stage: int = 5,
                    num_classes: int = 10, network: Any = None) -> Callable:
  """``(arch, key) -> {"score": ...}`` for the NAS-Bench-201 space (or the ENAS macro space): a fresh
  ``NB201Network`` (``EnasMacroNetwork``) initialised with ``key`` and scored by the proxy ``name`` on
  ``batch = (x, y)``.

  The network's variables are drawn from ``key`` with the distributions of its initialisers
  (:func:`nasjax.nn.init.draw_variables`). The returned function is jitted; ``jax.vmap`` over
  ``(archs[P, 6], keys[P])`` scores a population in one compiled program. BN runs in training mode (batch statistics), except for ``synflow``, which runs
  it in evaluation mode and reports the natural log of the score (same ranking, no overflow). With
  several names, ``"score"`` is the first and every proxy is reported under its own name too;
  ``grad_norm``, ``snip`` and ``jacob_cov`` then share one forward pass. ``vmap`` equals a loop for the
  default (threefry) keys; JAX's "rbg" keys draw different bits when batched, so with them a
  population's scores depend on how it was batched.

  Args:
    space: an ``NB201Space`` or an ``EnasMacroSpace``.
    name: a proxy of :data:`PROXIES`, or a sequence of them.
    batch: ``(images f32[B, H, W, 3], labels int[B])``, already normalised.
    channels, cells_per_stage, num_classes: size of the network (the benchmark: 16, 5, 10;
      ``cells_per_stage`` is NB201's only).
    network: an ``NB201Network`` (``genotype=None``) or ``EnasMacroNetwork`` of the space to use instead.
  """
  if isinstance(space, EnasMacroSpace):
    arch_shape = (space.num_decisions,)
    if network is None:
      network = EnasMacroNetwork.for_space(space, channels=channels, num_classes=num_classes)
    elif not isinstance(network, EnasMacroNetwork) or network.num_layers != space.num_layers:
      raise NasjaxError(f"proxy_estimator on enas_macro needs an EnasMacroNetwork of {space.num_layers} layers")
  elif isinstance(space, NB201Space):
    arch_shape = (len(NB201_EDGES),)
    if network is None:
      network = NB201Network(channels, cells_per_stage, num_classes)
    elif not isinstance(network, NB201Network) or network.genotype is not None:
      raise NasjaxError("proxy_estimator needs the switch NB201Network (genotype=None)")
  else:
    raise NasjaxError(f"proxy_estimator scores NAS-Bench-201 cells and ENAS macro networks; got space "
                      f"{getattr(space, 'name', type(space).__name__)!r} (use the proxies with as_apply_fn "
                      "for other models)")
  names = (name,) if isinstance(name, str) else tuple(name)
  unknown = [n for n in names if n not in PROXIES]
  if not names or unknown:
    raise NasjaxError(f"unknown zero-cost proxy {unknown or name!r}; accepted: {', '.join(PROXIES)}")
  x, y = _split_batch(batch, need_labels=True)
  if x.ndim != 4:
    raise NasjaxError(f"proxy_estimator needs NHWC images; got inputs of shape {x.shape}")

  def estimate(arch, key):
    arch = jnp.asarray(arch, jnp.int32)
    if arch.shape != arch_shape:
      raise NasjaxError(f"a {space.name} architecture has shape {arch_shape}; got {arch.shape}")
    # One example suffices to create the variables; the proxies run on the whole batch. One draw for
    # all kernels: a random initialiser per parameter was most of this program's compile time.
    variables = draw_variables(network, key, x[:1], arch, train=False)
    scores = {}
    if "synflow" in names:
      fn, params = as_apply_fn(network, variables, arch, train=False)
      scores["synflow"] = synflow(fn, params, (x, y), log=True)
    fn, params = as_apply_fn(network, variables, arch, train=True)
    scores.update(_train_mode_scores(fn, params, x, y, names))
    if "naswot" in names:
      scores["naswot"] = naswot(fn, params, (x, y))
    metrics = {"score": scores[names[0]]}
    if len(names) > 1:
      metrics.update(scores)
    return metrics

  return as_estimator(jax.jit(estimate), jittable=True, name="proxy:" + ",".join(names))
