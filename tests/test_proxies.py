"""Zero-cost proxies against hand computations on tiny networks, and the NB201 proxy estimator."""

from __future__ import annotations

import csv

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nasjax.errors import NasjaxError
from nasjax.estimators import proxies
from nasjax.estimators.proxies import (as_apply_fn, grad_norm, jacob_cov, naswot, proxy_estimator,
                                       relu_hamming_kernel, snip, synflow)
from nasjax.nn.nb201_network import NB201Network, discrete_variables
from nasjax.spaces import NB201Space

# These tests check values, not speed: XLA's optimisation passes dominate their compile times on CPU.
pytestmark = pytest.mark.usefixtures("fast_compiles")


def mlp(params, x):
  h = nn.relu(x @ params["l1"]["kernel"] + params["l1"]["bias"])
  return h @ params["l2"]["kernel"] + params["l2"]["bias"]


@pytest.fixture(scope="module")
def mlp_case():
  r = np.random.RandomState(0)
  params = {"l1": {"kernel": r.randn(12, 7).astype(np.float32), "bias": 0.1 * r.randn(7).astype(np.float32)},
            "l2": {"kernel": r.randn(7, 3).astype(np.float32), "bias": np.zeros(3, np.float32)}}
  x = r.randn(5, 12).astype(np.float32)
  y = np.array([0, 2, 1, 1, 0], np.int32)
  return params, x, y


def numpy_mlp_grads(params, x, y):
  w1, b1, w2, b2 = (params["l1"]["kernel"], params["l1"]["bias"], params["l2"]["kernel"], params["l2"]["bias"])
  pre = x @ w1 + b1
  h = np.maximum(pre, 0)
  z = h @ w2 + b2
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  dz = (p - np.eye(3)[y]) / len(y)  # mean cross-entropy
  dw2 = h.T @ dz
  dw1 = x.T @ ((dz @ w2.T) * (pre > 0))
  return dw1, dw2, pre


def test_grad_norm_and_snip_match_hand_gradients(mlp_case):
  params, x, y = mlp_case
  dw1, dw2, _ = numpy_mlp_grads(params, x, y)
  want_norm = np.linalg.norm(dw1) + np.linalg.norm(dw2)  # kernels only, one norm per layer
  want_snip = np.abs(params["l1"]["kernel"] * dw1).sum() + np.abs(params["l2"]["kernel"] * dw2).sum()
  np.testing.assert_allclose(grad_norm(mlp, params, (x, y)), want_norm, rtol=1e-5)
  np.testing.assert_allclose(snip(mlp, params, (x, y)), want_snip, rtol=1e-5)


def test_synflow_equals_depth_times_path_sum_for_a_chain():
  # For a chain of L linear layers on |W| and an all-ones input, every layer's sum of W * dR/dW equals
  # R = 1^T |W_1| ... |W_L| 1, so the score is L * R: a closed form to check against (float64 numpy).
  r = np.random.RandomState(1)
  widths = [3, 6, 5, 4]
  ws = [r.randn(a, b).astype(np.float32) for a, b in zip(widths[:-1], widths[1:])]
  params = {f"l{i}": {"kernel": w, "bias": np.zeros(w.shape[1], np.float32)} for i, w in enumerate(ws)}

  def chain(p, x):
    for i in range(len(ws)):
      x = nn.relu(x @ p[f"l{i}"]["kernel"] + p[f"l{i}"]["bias"])
    return x

  path_sum = np.ones(widths[0])
  for w in ws:
    path_sum = path_sum @ np.abs(w.astype(np.float64))
  want = len(ws) * path_sum.sum()
  x = r.randn(2, widths[0]).astype(np.float32)  # only its shape matters
  np.testing.assert_allclose(synflow(chain, params, x), want, rtol=1e-5)
  np.testing.assert_allclose(synflow(chain, params, x, rescale=False), want, rtol=1e-5)
  np.testing.assert_allclose(synflow(chain, params, x, log=True), np.log(want), rtol=1e-6)


def test_synflow_rescaling_survives_float32_overflow():
  depth, width = 24, 8
  r = np.random.RandomState(2)
  ws = [(60.0 * np.abs(r.randn(width, width))).astype(np.float32) for _ in range(depth)]
  params = {f"l{i}": {"kernel": w} for i, w in enumerate(ws)}

  def chain(p, x):
    for i in range(depth):
      x = x @ p[f"l{i}"]["kernel"]
    return x

  path_sum = np.ones(width)
  log_scale = 0.0
  for w in ws:  # float64 with a running normalisation: the exact log of R
    path_sum = path_sum @ w.astype(np.float64)
    log_scale += np.log(path_sum.sum())
    path_sum /= path_sum.sum()
  want_log = np.log(depth) + log_scale
  assert want_log > np.log(np.finfo(np.float32).max)  # float32 cannot hold the score itself
  x = np.zeros((1, width), np.float32)
  assert not np.isfinite(synflow(chain, params, x, rescale=False, log=True))
  np.testing.assert_allclose(synflow(chain, params, x, log=True), want_log, rtol=1e-5)


def test_synflow_of_a_constant_network_is_zero():
  params = {"l": {"kernel": np.zeros((3, 2), np.float32)}}
  fn = lambda p, x: x @ p["l"]["kernel"]  # noqa: E731
  assert float(synflow(fn, params, np.ones((1, 3), np.float32))) == 0.0
  assert float(synflow(fn, params, np.ones((1, 3), np.float32), log=True)) == -np.inf


def test_jacob_cov_matches_numpy(mlp_case):
  params, x, _ = mlp_case
  _, _, pre = numpy_mlp_grads(params, x, np.zeros(len(x), np.int32))
  # d(sum of outputs)/dx for example b: W1 diag(relu'(pre_b)) W2 1.
  jac = ((pre > 0) * params["l2"]["kernel"].sum(1)) @ params["l1"]["kernel"].T
  eig = np.linalg.eigvalsh(np.corrcoef(jac.astype(np.float64)))
  want = -np.sum(np.log(eig + 1e-5) + 1.0 / (eig + 1e-5))
  np.testing.assert_allclose(jacob_cov(mlp, params, x), want, rtol=1e-3)


def test_naswot_matches_numpy_codes(mlp_case):
  params, x, _ = mlp_case

  def two_relus(p, x):
    h = nn.relu(x @ p["l1"]["kernel"] + p["l1"]["bias"])
    return nn.relu(h @ p["l2"]["kernel"]) @ p["l2"]["kernel"].T

  pre1 = x @ params["l1"]["kernel"] + params["l1"]["bias"]
  pre2 = np.maximum(pre1, 0) @ params["l2"]["kernel"]
  codes = np.concatenate([pre1 > 0, pre2 > 0], axis=1).astype(np.float64)
  kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T
  np.testing.assert_array_equal(relu_hamming_kernel(two_relus, params, x), kernel)
  np.testing.assert_allclose(naswot(two_relus, params, x), np.linalg.slogdet(kernel)[1], rtol=1e-5)


def test_relu_kernel_sees_relus_in_switch_branches_scans_and_jits():
  r = np.random.RandomState(3)
  w1, w2 = r.randn(3, 5).astype(np.float32), r.randn(5, 5).astype(np.float32)
  x = r.randn(6, 3).astype(np.float32)

  def fn(p, x):
    h = nn.relu(x @ p["w1"])
    h = lax.switch(p["branch"], [lambda h: nn.relu(h - 0.3), lambda h: 2 * h], h)
    h, _ = lax.scan(lambda c, _: (nn.relu(c @ p["w2"]), None), h, length=2)
    return jax.jit(lambda h: h.sum(1, keepdims=True))(h)

  def by_hand(branch):
    pre = [x @ w1]
    h = np.maximum(pre[0], 0)
    if branch == 0:
      pre.append(h - 0.3)
      h = np.maximum(pre[-1], 0)
    else:
      h = 2 * h
    for _ in range(2):
      pre.append(h @ w2)
      h = np.maximum(pre[-1], 0)
    c = np.concatenate([q > 0 for q in pre], axis=1).astype(np.float64)
    return c @ c.T + (1 - c) @ (1 - c).T

  def kernel(branch):
    return relu_hamming_kernel(fn, {"w1": w1, "w2": w2, "branch": branch}, x)

  for b in (0, 1):
    np.testing.assert_array_equal(kernel(b), by_hand(b))
  batched = jax.jit(jax.vmap(kernel))(jnp.array([0, 1]))
  np.testing.assert_array_equal(batched, np.stack([by_hand(0), by_hand(1)]))


def test_bad_inputs_are_clear_errors(mlp_case):
  params, x, y = mlp_case
  with pytest.raises(NasjaxError, match="labels"):
    snip(mlp, params, x)
  with pytest.raises(NasjaxError, match="integer class indices"):
    grad_norm(mlp, params, (x, y[:2]))
  with pytest.raises(NasjaxError, match="accepted: synflow"):
    proxy_estimator(NB201Space(), "zen", (np.zeros((2, 8, 8, 3)), np.zeros(2, np.int32)))
  from nasjax.spaces import darts_space
  with pytest.raises(NasjaxError, match="NAS-Bench-201"):
    proxy_estimator(darts_space(), "snip", (np.zeros((2, 8, 8, 3)), np.zeros(2, np.int32)))


TINY = dict(channels=2, cells_per_stage=1, num_classes=5)


@pytest.fixture(scope="module")
def tiny_batch():
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  return x, jnp.array([0, 1, 2, 3], jnp.int32)


@pytest.mark.slow  # two compilations of initialiser + proxy: about 80 s on a loaded 2-core CPU
def test_proxy_estimator_vmap_equals_loop_and_is_deterministic(tiny_batch):
  est = proxy_estimator(NB201Space(), "naswot", tiny_batch, **TINY)
  archs = jnp.array([[3, 3, 3, 1, 3, 3], [1, 4, 2, 0, 1, 3], [2, 4, 1, 3, 0, 2]], jnp.int32)
  keys = jax.random.split(jax.random.key(7), len(archs))
  batched = jax.jit(jax.vmap(est))(archs, keys)["score"]
  looped = np.array([float(est(a, k)["score"]) for a, k in zip(archs, keys)])
  np.testing.assert_allclose(batched, looped, rtol=1e-5)
  assert float(est(archs[0], keys[0])["score"]) == looped[0]
  assert np.all(np.isfinite(looped)) and len(set(looped.tolist())) == len(archs)
  assert float(est(archs[0], keys[1])["score"]) != looped[0]  # the key does initialise the network


def test_proxies_of_switch_network_equal_those_of_the_standalone_network(tiny_batch):
  # The ReLU interpreter must count only the chosen op of every lax.switch edge.
  arch = np.array([3, 2, 4, 1, 3, 0], np.int32)
  net = NB201Network(**TINY)
  variables = jax.jit(lambda k: net.init(k, tiny_batch[0][:1], arch))(jax.random.key(3))
  fixed = NB201Network(**TINY, genotype=tuple(arch))
  fixed_vars = discrete_variables(variables, arch)

  @jax.jit
  def scores(variables, fixed_vars):
    out = []
    for model, v, args in ((net, variables, (arch,)), (fixed, fixed_vars, ())):
      fn, params = as_apply_fn(model, v, *args, train=True)
      out.append(naswot(fn, params, tiny_batch))
    return out

  switch_scores, fixed_scores = scores(variables, fixed_vars)
  np.testing.assert_allclose(switch_scores, fixed_scores, rtol=1e-5)


@pytest.mark.slow
def test_synflow_ranks_nb201_archs_like_the_benchmark(nb201_table):
  """Spearman rank correlation of log-synflow (data-free) with c10valid validation accuracy."""
  with open(nb201_table) as f:
    rows = list(csv.DictReader(f))
  rng = np.random.RandomState(0)
  sample = [rows[i] for i in rng.choice(len(rows), 40, replace=False)]
  space = NB201Space()
  archs = jnp.asarray(np.stack([space.from_string(r["arch_str"]) for r in sample]))
  acc = np.array([float(r["c10valid_valid_acc"]) for r in sample])
  x = jnp.zeros((2, 32, 32, 3))
  est = proxy_estimator(space, "synflow", (x, jnp.zeros(2, jnp.int32)))
  scores = np.asarray(jax.jit(jax.vmap(est))(archs, jax.random.split(jax.random.key(0), len(archs)))["score"])
  ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
  rho = np.corrcoef(ranks(scores), ranks(acc))[0, 1]
  print(f"spearman(log synflow, c10valid_valid_acc) on 40 archs: {rho:.3f}")
  assert rho > 0.5


def test_registry_lists_every_proxy():
  assert set(proxies.PROXIES) == {"synflow", "grad_norm", "snip", "jacob_cov", "naswot"}


def test_draw_variables_has_inits_structure_and_distributions():
  from nasjax.nn.init import draw_variables
  net = NB201Network(channels=4, cells_per_stage=1, num_classes=5)
  x, arch = jnp.zeros((1, 8, 8, 3)), jnp.array([3, 2, 4, 1, 3, 0], jnp.int32)
  want = jax.eval_shape(lambda k: net.init(k, x, arch, train=False), jax.random.key(0))
  draw = jax.jit(jax.vmap(lambda k: draw_variables(net, k, x, arch, train=False)))
  got = draw(jax.random.split(jax.random.key(1), 2))
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, leaf), (_, shape) in zip(jax.tree_util.tree_leaves_with_path(got),
                                      jax.tree_util.tree_leaves_with_path(want)):
    assert leaf.shape[1:] == shape.shape and leaf.dtype == shape.dtype
    name = path[-1].key
    if name in ("scale", "var"):
      np.testing.assert_array_equal(leaf, 1.0)
    elif name in ("bias", "mean"):
      np.testing.assert_array_equal(leaf, 0.0)
  # LeCun normal: every kernel scaled by sqrt(fan_in) is one truncated standard normal of variance 1.
  scaled = [np.asarray(k[0]).ravel() * np.sqrt(np.prod(k.shape[1:-1]))
            for k in proxies._selected(got["params"], proxies.is_weight)]
  pooled = np.concatenate(scaled)
  assert pooled.size > 3000 and abs(pooled.std() - 1.0) < 0.05 and abs(pooled.mean()) < 0.05
  assert np.abs(pooled).max() <= 2.0 / 0.87962566103423978 + 1e-5
  first_kernel = proxies._selected(got["params"], proxies.is_weight)[0]
  assert not np.allclose(first_kernel[0], first_kernel[1])  # the key decides the values
  one = jax.jit(lambda k: draw_variables(net, k, x, arch, train=False))(jax.random.split(jax.random.key(1), 2)[1])
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b[1])


@pytest.mark.slow  # two compilations of the estimator network (all five proxies, then each alone)
def test_proxy_estimator_with_every_proxy_equals_each_proxy_alone(tiny_batch):
  # The estimator shares one forward pass among grad_norm, snip and jacob_cov and batches synflow's
  # probes; each public proxy computes its own.
  from nasjax.nn.init import draw_variables
  space, arch, key = NB201Space(), jnp.array([3, 2, 4, 1, 3, 3], jnp.int32), jax.random.key(5)
  names = tuple(proxies.PROXIES)
  got = proxy_estimator(space, names, tiny_batch, **TINY)(arch, key)
  net = NB201Network(**TINY)

  @jax.jit
  def alone(arch, key):
    variables = draw_variables(net, key, tiny_batch[0][:1], arch, train=False)
    out = {}
    for n in names:
      fn, params = as_apply_fn(net, variables, arch, train=n != "synflow")
      out[n] = (synflow(fn, params, tiny_batch, log=True) if n == "synflow"
                else proxies.PROXIES[n](fn, params, tiny_batch))
    return out

  want = alone(arch, key)
  for n in names:
    np.testing.assert_allclose(got[n], want[n], rtol=2e-5, err_msg=n)
  assert float(got["score"]) == float(got[names[0]])
