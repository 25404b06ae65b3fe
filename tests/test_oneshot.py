"""One-shot search: exact hypergradients, derivation, methods, data parallelism, resume, bad input."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.nn import ops as nnops
from nasjax.nn.init import init_variables
from nasjax.nn.supernet import MixedOp, Supernet, channel_shuffle
from nasjax.oneshot import (architecture_gradient, derive_arch, dominant_eigenvalue, hessian_vector_product,
                            run_search, search_config, virtual_step)
from nasjax.oneshot.drnas import dirichlet_kl_to_uniform
from nasjax.oneshot.gdas import gdas
from nasjax.oneshot.pcdarts import edge_normalisation
from nasjax.oneshot.snas import gumbel_soft, snas, temperature
from nasjax.oneshot.search import Search, _collapse_check
from nasjax.spaces import darts_space
from nasjax.spaces.cells import CellSpace

# Cheap ops keep compile times of the tiny supernets in seconds; the DARTS ops are covered by test_nn.
# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")
TINY_SPACE = CellSpace("tiny", ("skip_connect", "conv_1x1"), 2, True)


def tiny_config(method="darts", **overrides):
  cfg = search_config(method)
  cfg.update(epochs=2, batch_size=8, channels=4, layers=2, train_subset=0, arch_warmup_epochs=0,
             eval_batch_size=32, crop_padding=1, rank_samples=3, rank_batches=1)
  if method == "pcdarts":
    cfg.partial_channels = 2
  cfg.update(overrides)
  return cfg


# ---------------------------------------------------------------------------------------------- derive
def test_derivation_keeps_two_strongest_non_none_edges_per_node():
  space = darts_space()
  ops = space.supernet_ops
  probs = {c: np.full((14, 8), 0.01) for c in ("normal", "reduce")}
  # Node 0 (edges 0, 1): edge 1 strong sep_conv_3x3, edge 0 strong 'none' but weak otherwise.
  probs["normal"][0, ops.index("none")] = 0.9
  probs["normal"][0, ops.index("max_pool_3x3")] = 0.05
  probs["normal"][1, ops.index("sep_conv_3x3")] = 0.8
  # Node 1 (edges 2, 3, 4): edges 4 and 2 win.
  probs["normal"][4, ops.index("dil_conv_5x5")] = 0.7
  probs["normal"][2, ops.index("skip_connect")] = 0.6
  probs["normal"][3, ops.index("avg_pool_3x3")] = 0.5
  genotype = space.decode(derive_arch(space, probs))
  assert genotype.normal[0] == ("sep_conv_3x3", 1)
  assert genotype.normal[1] == ("max_pool_3x3", 0)  # 'none' never counts
  assert genotype.normal[2:4] == (("dil_conv_5x5", 2), ("skip_connect", 0))


def test_derivation_rejects_non_finite_probabilities():
  space = darts_space()
  probs = {c: np.full((14, 8), np.nan) for c in ("normal", "reduce")}
  with pytest.raises(NasjaxError, match="not finite"):
    derive_arch(space, probs)


def test_pcdarts_edge_weights_multiply_edge_strength():
  space = darts_space()
  probs = {c: np.full((14, 8), 1 / 8) for c in ("normal", "reduce")}
  strength = {c: np.ones(14) for c in ("normal", "reduce")}
  strength["normal"][[2, 3, 4]] = [0.1, 0.5, 0.4]
  genotype = space.decode(derive_arch(space, probs, strength))
  assert sorted(i for _, i in genotype.normal[2:4]) == [1, 2]  # edges 3 and 4 read inputs 1 and 2


def test_edge_normalisation_is_a_softmax_per_destination_node():
  beta = jnp.arange(14, dtype=jnp.float32) / 7
  w = edge_normalisation(beta)
  starts = [0, 2, 5, 9, 14]
  for a, b in zip(starts, starts[1:]):
    np.testing.assert_allclose(w[a:b], jax.nn.softmax(beta[a:b]), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- hypergradient
def _tiny_problem(dtype):
  net = Supernet(ops=("none", "skip_connect", "conv_1x1"), num_nodes=2, channels=4, layers=1, num_classes=3)
  rng = np.random.default_rng(0)
  xt, xv = (jnp.asarray(rng.normal(size=(6, 6, 6, 2)), dtype) for _ in range(2))
  yt, yv = jnp.asarray([0, 1, 2, 0, 1, 2]), jnp.asarray([2, 1, 0, 0, 2, 1])
  arch0 = {c: jnp.asarray(rng.normal(size=(5, 3)) * 0.3, dtype) for c in ("normal", "reduce")}
  variables = init_variables(net, jax.random.key(0), xt, arch0, train=False)
  params = jax.tree.map(lambda a: a.astype(dtype), variables["params"])
  stats = jax.tree.map(lambda a: a.astype(dtype), variables["batch_stats"])
  buffer = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.1, dtype), params)

  def loss(p, arch, x, y):
    w = {c: jax.nn.softmax(a, -1) for c, a in arch.items()}
    logits, _ = net.apply({"params": p, "batch_stats": stats}, x, w, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  train_loss = lambda p, a: loss(p, a, xt, yt)
  valid_loss = lambda p, a: loss(p, a, xv, yv)
  return train_loss, valid_loss, params, arch0, buffer


def test_exact_second_order_hypergradient_matches_float64_finite_difference():
  with jax.enable_x64(True):
    train_loss, valid_loss, params, arch, buffer = _tiny_problem(jnp.float64)
    xi, momentum, wd = 0.05, 0.9, 3e-4
    kwargs = dict(order=2, xi=xi, momentum_buffer=buffer, momentum=momentum, weight_decay=wd)
    grads = {mode: jax.jit(lambda p, a, mode=mode: architecture_gradient(
        train_loss, valid_loss, p, a, hessian=mode, **kwargs)[1])(params, arch)
        for mode in ("jvp", "jvp_recompute", "unroll", "finite_difference")}

    @jax.jit
    def unrolled(a):
      g = jax.grad(train_loss)(params, a)
      return valid_loss(virtual_step(params, g, xi, buffer, momentum, wd), a)

    rng = np.random.default_rng(1)
    eps = 1e-5
    for _ in range(3):
      d = {c: jnp.asarray(rng.normal(size=(5, 3))) for c in ("normal", "reduce")}
      plus = unrolled(jax.tree.map(lambda a, v: a + eps * v, arch, d))
      minus = unrolled(jax.tree.map(lambda a, v: a - eps * v, arch, d))
      numeric = float((plus - minus) / (2 * eps))
      for mode in ("jvp", "jvp_recompute", "unroll"):
        exact = float(sum(jnp.vdot(grads[mode][c], d[c]) for c in d))
        assert abs(exact - numeric) <= 1e-4 * abs(numeric), (mode, exact, numeric)
    flat = lambda g: np.concatenate([np.ravel(g[c]) for c in ("normal", "reduce")])
    np.testing.assert_allclose(flat(grads["jvp"]), flat(grads["unroll"]), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(flat(grads["jvp_recompute"]), flat(grads["jvp"]), rtol=1e-10, atol=1e-14)
    # The paper's finite difference is an approximation: close, but measurably not exact.
    paper_error = np.linalg.norm(flat(grads["finite_difference"]) - flat(grads["jvp"])) / np.linalg.norm(
        flat(grads["jvp"]))
    assert 0 < paper_error < 0.05


def test_first_order_is_the_plain_validation_gradient():
  train_loss, valid_loss, params, arch, _ = _tiny_problem(jnp.float32)
  value, grad = architecture_gradient(train_loss, valid_loss, params, arch, order=1)
  chex.assert_trees_all_close(grad, jax.grad(valid_loss, argnums=1)(params, arch), rtol=1e-6)
  with pytest.raises(NasjaxError, match="order"):
    architecture_gradient(train_loss, valid_loss, params, arch, order=3)
  with pytest.raises(NasjaxError, match="hessian"):
    architecture_gradient(train_loss, valid_loss, params, arch, order=2, hessian="magic")


def test_dominant_eigenvalue_of_a_known_quadratic():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(6, 6))
  h = q @ np.diag([5.0, -1.0, 2.0, 0.5, 0.1, 0.0]) @ q.T
  h = jnp.asarray((h + h.T) / 2, jnp.float32)
  loss = lambda a: 0.5 * a["x"] @ h @ a["x"]
  arch = {"x": jnp.ones(6)}
  value = dominant_eigenvalue(lambda v: hessian_vector_product(loss, arch, v), arch, jax.random.key(0), 100)
  expected = np.max(np.abs(np.linalg.eigvalsh(np.asarray(h))))
  assert abs(value - expected) < 1e-3 * expected


# ---------------------------------------------------------------------------------------------- methods
def test_drnas_kl_is_zero_at_the_uniform_prior_and_positive_elsewhere():
  assert abs(float(dirichlet_kl_to_uniform(jnp.ones((3, 5))))) < 1e-5
  assert float(dirichlet_kl_to_uniform(jnp.full((3, 5), 4.0))) > 0.1


_CALLS: list = []


def _register_probe_ops():
  for name in ("probe_a", "probe_b", "probe_c"):
    if name in nnops.OPS:
      continue

    def factory(config, name=name):
      class Probe(nnops.nn.Module):
        @nnops.nn.compact
        def __call__(self, x, train=False):
          jax.debug.callback(lambda: _CALLS.append(name))
          return x * 1.0
      return Probe()
    nnops.register_op(name)(factory)


def test_gdas_runs_only_the_sampled_op_of_each_edge():
  _register_probe_ops()
  net = Supernet(ops=("none", "probe_a", "probe_b", "probe_c"), num_nodes=2, channels=4, layers=1,
                 num_classes=2)
  x = jnp.ones((2, 8, 8, 1))
  logits = {c: jnp.zeros((5, 4)) for c in ("normal", "reduce")}
  hard = gdas().mix(logits, jax.random.key(0), 0.5)
  variables = net.init(jax.random.key(0), x, hard, train=False, hard=True)
  apply = jax.jit(lambda v, w: net.apply(v, x, w, train=False, hard=True))
  jax.block_until_ready(apply(variables, hard))
  _CALLS.clear()
  jax.block_until_ready(apply(variables, hard))
  jax.effects_barrier()
  # One normal cell (one layer has no reduction) with 5 edges: only the sampled op of each edge ran
  # ('none' is computed as nothing).
  chosen = [net.ops[i] for i in np.argmax(np.asarray(hard["normal"]), -1)]
  assert sorted(_CALLS) == sorted(op for op in chosen if op != "none")
  soft = {c: jnp.full((5, 4), 0.25) for c in ("normal", "reduce")}
  _CALLS.clear()
  jax.block_until_ready(jax.jit(lambda v, w: net.apply(v, x, w, train=False))(variables, soft))
  jax.effects_barrier()
  assert len(_CALLS) == 5 * 3  # relaxed DARTS computes every op of every edge


def test_gdas_sample_is_one_hot_with_straight_through_gradient():
  logits = jnp.asarray([[0.1, 0.5, -0.3]])
  w = gdas().mix({"normal": logits, "reduce": logits}, jax.random.key(3), 0.0)["normal"]
  assert np.allclose(np.sort(np.asarray(w[0])), [0, 0, 1])
  g = jax.grad(lambda l: gdas().mix({"normal": l, "reduce": l}, jax.random.key(3), 0.0)["normal"][0, 1])(logits)
  assert np.any(np.asarray(g) != 0)


def test_pcdarts_edges_compute_one_kth_of_the_channels_and_pass_the_rest():
  op = MixedOp(("none", "conv_1x1"), channels=8, partial_channels=4)
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
  w = jnp.asarray([0.0, 1.0])
  variables = op.init(jax.random.key(1), x, w, "relaxed", False)
  kernel = jax.tree.leaves(variables["params"])[0]
  assert 8 // 4 in kernel.shape and 8 not in kernel.shape  # the op sees C/K channels
  y = op.apply(variables, x, w, "relaxed", False)
  # Undo the shuffle: the last 3/4 of the channels are the input's passive channels, untouched.
  unshuffled = channel_shuffle(y, 8 // 4)
  np.testing.assert_array_equal(np.asarray(unshuffled[..., 2:]), np.asarray(x[..., 2:]))


# ---------------------------------------------------------------------------------------------- the loop
@pytest.fixture(scope="module")
def dataset(tiny_dataset):  # conftest.py: 96 8x8 grey images in 4 classes told apart by brightness
  return tiny_dataset


def test_search_derives_a_valid_genotype_and_logs_alphas(dataset, tmp_path):
  cfg = tiny_config(eigen_every=1, eigen_iters=2)
  result = run_search(cfg, TINY_SPACE, dataset, workdir=str(tmp_path), show_progress=False)
  assert result["finished"] and len(result["history"]) == 2
  TINY_SPACE.check(np.asarray(result["arch"]))
  assert result["genotype"] == TINY_SPACE.to_string(result["arch"])
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["epoch"] for r in records] == [1, 2]
  # The first epoch's time holds the compilation; its steady rate leaves it out.
  assert all(0 < r["steady_s_per_step"] < r["seconds"] for r in records)
  assert records[0]["seconds"] - records[0]["steady_s_per_step"] > records[1]["seconds"]
  alphas = np.asarray(records[-1]["alphas"]["normal"])
  assert alphas.shape == (5, 3) and np.allclose(alphas.sum(-1), 1, atol=1e-4)
  assert all(np.isfinite(r["hessian_eigenvalue"]) for r in records)
  assert records[0]["alphas"] != records[1]["alphas"]  # the architecture moved


def test_warm_up_epochs_train_only_the_weights(dataset):
  result = run_search(tiny_config(arch_warmup_epochs=1), TINY_SPACE, dataset, show_progress=False)
  warm, searched = result["history"]
  # The first epoch's alphas are the initial ones (no validation loss is even computed), the second moves.
  init = Search(tiny_config(), TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6).init_state()["arch"]
  np.testing.assert_allclose(warm["alphas"]["normal"], jax.nn.softmax(init["normal"], -1), atol=2e-5)
  assert "valid_loss" not in warm and np.isfinite(searched["valid_loss"])
  assert warm["alphas"] != searched["alphas"]


def test_killed_search_resumes_bitwise(dataset, tmp_path):
  cfg = tiny_config(checkpoint_every_steps=2)
  full = run_search(cfg, TINY_SPACE, dataset, show_progress=False)
  # "Kill" after 3 steps of epoch 1 (the checkpoint after step 2 is the last one), then resume.
  partial = run_search(cfg, TINY_SPACE, dataset, workdir=str(tmp_path), show_progress=False, stop_after_steps=3)
  assert not partial["finished"]
  resumed = run_search(cfg, TINY_SPACE, dataset, workdir=str(tmp_path), show_progress=False)
  for a, b in zip(jax.tree.leaves(jax.device_get(full["state"])), jax.tree.leaves(jax.device_get(resumed["state"]))):
    np.testing.assert_array_equal(a, b)
  assert resumed["genotype"] == full["genotype"]
  assert [r["train_loss"] for r in resumed["history"]] == pytest.approx([r["train_loss"] for r in full["history"]])


def test_resume_with_other_settings_is_refused(dataset, tmp_path):
  run_search(tiny_config(epochs=1), TINY_SPACE, dataset, workdir=str(tmp_path), show_progress=False)
  with pytest.raises(NasjaxError, match="another run"):
    run_search(tiny_config(epochs=1, seed=5), TINY_SPACE, dataset, workdir=str(tmp_path), show_progress=False)
  # Data with the same name but one label changed is another data set; an identical copy is the same one.
  relabelled = dataset.y_train.copy()
  relabelled[0] = (relabelled[0] + 1) % 4
  other = nasdata.Dataset(dataset.name, dataset.x_train, relabelled, dataset.x_test, dataset.y_test, 4,
                          dataset.mean, dataset.std)
  with pytest.raises(NasjaxError, match="differs in: dataset"):
    run_search(tiny_config(epochs=1), TINY_SPACE, other, workdir=str(tmp_path), show_progress=False)
  copy = nasdata.Dataset(dataset.name, dataset.x_train.copy(), dataset.y_train.copy(), dataset.x_test.copy(),
                         dataset.y_test.copy(), 4, dataset.mean, dataset.std)
  assert run_search(tiny_config(epochs=1), TINY_SPACE, copy, workdir=str(tmp_path), show_progress=False)["finished"]


def test_nan_loss_stops_the_search_and_names_the_step(dataset, tmp_path):
  bad = nasdata.Dataset("bad", np.full_like(dataset.x_train, np.nan), dataset.y_train, dataset.x_test,
                        dataset.y_test, 4, (0.4,), (0.2,))
  with pytest.raises(NasjaxError, match=r"became nan at epoch 1, step 1"):
    run_search(tiny_config(epochs=1), TINY_SPACE, bad, workdir=str(tmp_path), show_progress=False)
  assert not (tmp_path / "metrics.jsonl").exists() or not open(tmp_path / "metrics.jsonl").read()


def test_data_parallel_step_equals_single_device_step(dataset):
  if jax.device_count() < 4:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4")
  cfg = tiny_config()
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    mesh = nasdata.data_mesh(devices)
    search = Search(cfg, TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6, mesh)
    state = nasdata.replicate(search.init_state(), mesh)
    batch = nasdata.shard_batch((dataset.x_train[:8], dataset.y_train[:8].astype(np.int32),
                                 dataset.x_train[8:16], dataset.y_train[8:16].astype(np.int32)), mesh)
    for _ in range(2):
      state, metrics = search.step(state, *batch)
    results.append(jax.device_get(state))
  chex.assert_trees_all_close(results[0]["params"], results[1]["params"], atol=1e-5, rtol=1e-4)
  chex.assert_trees_all_close(results[0]["arch"], results[1]["arch"], atol=1e-6, rtol=1e-5)


def test_bad_settings_are_refused(dataset):
  with pytest.raises(NasjaxError, match="unknown one-shot method"):
    search_config("nope")
  with pytest.raises(NasjaxError, match="order"):
    run_search(tiny_config(order=3), TINY_SPACE, dataset, show_progress=False)
  with pytest.raises(NasjaxError, match="anti_collapse"):
    run_search(tiny_config(anti_collapse="magic"), TINY_SPACE, dataset, show_progress=False)


def test_anti_collapse_rules():
  cfg = tiny_config(anti_collapse="skip_limit", max_skips=2)
  history = [{"epoch": 1, "normal_skips": 1}, {"epoch": 2, "normal_skips": 2}]
  reason, keep = _collapse_check(cfg, history)
  assert "skip connections" in reason and keep["epoch"] == 1
  cfg = tiny_config(anti_collapse="eigenvalue", eigen_every=1, eigen_window=2, eigen_ratio=0.75)
  calm = [{"epoch": i + 1, "hessian_eigenvalue": 1.0} for i in range(4)]
  assert _collapse_check(cfg, calm) == (None, None)
  growing = [{"epoch": i + 1, "hessian_eigenvalue": v} for i, v in enumerate([1.0, 1.0, 2.0, 2.0])]
  reason, keep = _collapse_check(cfg, growing)
  assert "eigenvalue" in reason and keep["epoch"] == 2  # RobustDARTS goes back eigen_window epochs


def test_snas_temperature_anneals_exponentially_and_samples_are_relaxed():
  assert temperature(0.0) == pytest.approx(1.0)
  assert temperature(1.0) == pytest.approx(0.03)
  assert temperature(0.5) == pytest.approx(0.03 ** 0.5)
  logits = jnp.zeros((5, 3))
  warm = gumbel_soft(jax.random.key(0), logits, 1.0)
  cold = gumbel_soft(jax.random.key(0), logits, 0.03)
  np.testing.assert_allclose(warm.sum(-1), 1.0, atol=1e-6)
  assert float(warm.max(-1).min()) < 0.99 and float(cold.max(-1).min()) > 0.99  # soft early, ~one-hot late
  with pytest.raises(ValueError, match="tau_min"):
    snas(tau_max=0.5, tau_min=1.0)


def test_snas_step_descends_the_training_loss_in_weights_and_architecture_together(dataset):
  """One SNAS step: the architecture update is Adam on the gradient of the *training* loss (same relaxed
  sample as the weights' gradient), and the validation batch plays no part."""
  search = Search(tiny_config("snas"), TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6)
  state = search.init_state()
  xt, yt = dataset.x_train[:8], dataset.y_train[:8].astype(np.int32)
  xv, yv = dataset.x_train[8:16], dataset.y_train[8:16].astype(np.int32)
  step = jax.jit(search._step)  # one program for both calls
  new, metrics = step(state, xt, yt, xv, yv)
  other, _ = step(state, xt, yt, xv[::-1] * 0 + 3.0, (yv + 1) % 4)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(other)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The same gradient by hand: the step's keys, augmentation and relaxed sample, then Adam on it.
  @jax.jit
  def arch_grad_by_hand(state, xt, yt):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    k_aug_t, _, _, k_weights = jax.random.split(key, 4)
    x = search._augment(k_aug_t, xt)
    def train_loss(arch):
      return search.loss(state["params"], state["batch_stats"], search.weights(arch, k_weights, state["step"]),
                         x, yt)[0]
    return jax.grad(train_loss)(state["arch"])
  arch_grad = arch_grad_by_hand(state, xt, yt)
  assert float(jnp.abs(arch_grad["normal"]).max()) > 0
  updates, _ = search.arch_tx.update(arch_grad, state["arch_opt"], state["arch"])
  want = optax.apply_updates(state["arch"], updates)
  for cell in ("normal", "reduce"):
    np.testing.assert_allclose(new["arch"][cell], want[cell], rtol=1e-5, atol=1e-7)
  assert np.isfinite(float(metrics["loss"])) and "valid_loss" not in metrics


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gdas", "pcdarts", "drnas", "snas", "spos"])
def test_every_method_searches(method, dataset):
  result = run_search(tiny_config(method), TINY_SPACE, dataset, show_progress=False)
  TINY_SPACE.check(np.asarray(result["arch"]))
  assert all(np.isfinite(r["train_loss"]) for r in result["history"])
  if method == "spos":
    assert len(result["ranking"]) == 3
    assert result["ranking"][0]["accuracy"] >= result["ranking"][-1]["accuracy"]


@pytest.mark.slow
def test_second_order_search_step_runs(dataset):
  result = run_search(tiny_config(order=2, epochs=1), TINY_SPACE, dataset, show_progress=False)
  assert np.isfinite(result["history"][0]["valid_loss"])


def test_darts_minus_adds_a_decaying_skip_weight():
  cfg = tiny_config(anti_collapse="darts_minus")
  search = Search(cfg, TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6)
  arch = {c: jnp.zeros((5, 3)) for c in ("normal", "reduce")}
  skip = TINY_SPACE.supernet_ops.index("skip_connect")
  start = search.weights(arch, jax.random.key(0), 0)
  end = search.weights(arch, jax.random.key(0), search.total_steps)
  np.testing.assert_allclose(start["normal"][:, skip], 1 / 3 + 1.0, rtol=1e-6)
  np.testing.assert_allclose(end["normal"][:, skip], 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(start["reduce"][:, skip], 1 / 3, rtol=1e-6)


@pytest.mark.slow
def test_cli_search_then_retrain(tmp_path):
  from nasjax.cli import main
  out = tmp_path / "search"
  assert main(["search", "--method", "darts", "--config", "demo", "--epochs", "1", "--channels", "4",
               "--layers", "2", "--train-subset", "320", "--out", str(out), "--quiet"]) == 0
  result = json.loads(open(out / "result.json").read())
  assert result["genotype"].startswith("Genotype(") and len(result["history"]) == 1
  assert "alphas" in result["history"][0]
  # A finished search is never overwritten.
  assert main(["search", "--method", "darts", "--config", "demo", "--out", str(out), "--quiet"]) == 2
  retrain = tmp_path / "train"
  assert main(["train", "--genotype", str(out / "result.json"), "--config", "demo", "--epochs", "1",
               "--channels", "4", "--layers", "2", "--train-subset", "200", "--out", str(retrain),
               "--quiet"]) == 0
  assert json.loads(open(retrain / "result.json").read())["genotype"] == result["genotype"]


def test_spos_searches_its_trained_supernet_with_the_configured_strategy(dataset):
  """SPOS ranking is search.run(<any strategy>, weight-sharing estimator): evolution by default (as in
  the SPOS paper), random search with weight sharing by name."""
  from nasjax.oneshot.search import check_config
  with pytest.raises(NasjaxError, match="unknown rank_strategy 'annealing'; accepted: grid, random"):
    check_config(tiny_config("spos", rank_strategy="annealing"))
  for strategy in ("regularized_evolution", "random"):
    result = run_search(tiny_config("spos", epochs=1, rank_samples=5, rank_strategy=strategy), TINY_SPACE,
                        dataset, show_progress=False)
    accuracies = [r["accuracy"] for r in result["ranking"]]
    assert len(accuracies) == 5 and accuracies == sorted(accuracies, reverse=True)
    assert result["arch"] == result["ranking"][0]["arch"] or np.array_equal(result["arch"],
                                                                             result["ranking"][0]["arch"])
