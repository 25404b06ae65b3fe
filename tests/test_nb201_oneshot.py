"""The NB201 supernet's relaxed and hard modes, and one-shot search on the NB201 space."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import cli, oneshot
from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.nn.init import init_variables
from nasjax.nn.nb201_network import NB201Cell, NB201Network
from nasjax.spaces import NB201_OPS, NB201Space

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")

ARCH = np.array([3, 0, 1, 2, 4, 3], np.int32)  # every op, 'none' included


@pytest.fixture(scope="module")
def tiny():
  net = NB201Network(channels=4, cells_per_stage=1, num_classes=3, affine=False)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  variables = init_variables(net, jax.random.key(1), x, jnp.full((6, 5), 0.2), train=False)
  return net, x, variables


def test_modes_share_variables(tiny):
  net, x, variables = tiny
  for arch, hard in ((ARCH, False), (jnp.full((6, 5), 0.2), True)):
    other = jax.eval_shape(lambda k, arch=arch, hard=hard: net.init(k, x, arch, hard=hard), jax.random.key(0))
    assert jax.tree.structure(other) == jax.tree.structure(variables)


def test_one_hot_relaxed_and_hard_equal_discrete(tiny):
  net, x, variables = tiny
  one_hot = jax.nn.one_hot(ARCH, len(NB201_OPS))

  @jax.jit  # one program for all five calls: eager flax would dispatch (and compile) op by op
  def outputs(variables, x):
    return (net.apply(variables, x, ARCH), net.apply(variables, x, one_hot),
            net.apply(variables, x, one_hot, hard=True),
            net.apply(variables, x, ARCH, train=True, mutable=["batch_stats"]),
            net.apply(variables, x, one_hot, train=True, hard=True, mutable=["batch_stats"]))

  discrete, relaxed, hard, (d, d_stats), (h, h_stats) = outputs(variables, x)
  np.testing.assert_allclose(relaxed, discrete, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(hard, discrete, rtol=1e-6, atol=1e-7)
  # Training mode too (batch statistics of the chosen ops only in the hard and discrete modes).
  np.testing.assert_allclose(h, d, rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(d_stats), jax.tree.leaves(h_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_hard_gradient_reaches_weights_and_mixing_weights():
  """On one cell (a third of the network's compile): GDAS's straight-through gradient."""
  cell = NB201Cell(channels=4, affine=False)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  one_hot = jax.nn.one_hot(ARCH, len(NB201_OPS))
  variables = init_variables(cell, jax.random.key(1), x, one_hot, False, "relaxed")

  def loss(params, w, mode):
    return jnp.sum(cell.apply({**variables, "params": params}, x, w, False, mode) ** 2)

  @jax.jit
  def grads(params, w):
    return jax.grad(loss, (0, 1))(params, w, "hard"), jax.grad(loss, 1)(params, w, "relaxed")

  (g_params, g_hard), g_relaxed = grads(variables["params"], one_hot)
  rows = np.arange(6)
  # Only the chosen op runs, so only its weight gets a gradient: the relaxed mode's for that op.
  np.testing.assert_allclose(g_hard[rows, ARCH], g_relaxed[rows, ARCH], rtol=1e-4, atol=1e-6)
  others = np.ones((6, 5), bool)
  others[rows, ARCH] = False
  assert np.all(np.asarray(g_hard)[others] == 0)
  nonzero = [e for e in range(6) if NB201_OPS[ARCH[e]] != "none"]
  assert np.all(np.abs(np.asarray(g_hard)[nonzero, ARCH[nonzero]]) > 0)
  # The chosen convolutions' kernels learn; a convolution the edge did not choose gets nothing.
  leaves = jax.tree_util.tree_leaves_with_path(g_params["edge_0_to_1"])
  chosen = [np.any(np.asarray(v) != 0) for p, v in leaves if "nor_conv_3x3" in jax.tree_util.keystr(p)]
  unchosen = [np.any(np.asarray(v) != 0) for p, v in leaves if "nor_conv_1x1" in jax.tree_util.keystr(p)]
  assert chosen and all(chosen) and unchosen and not any(unchosen)


def test_relaxed_is_the_weighted_sum(tiny):
  net, x, variables = tiny
  w = jax.nn.softmax(jax.random.normal(jax.random.key(3), (6, 5)), axis=-1)
  apply = jax.jit(lambda w: net.apply(variables, x, w))
  out = apply(w)
  assert out.shape == (2, 3) and np.all(np.isfinite(out))
  # Every edge's row weighs its ops: doubling the last edge's row changes the output.
  assert not np.allclose(apply(w.at[5].multiply(2.0)), out)


def test_bad_architectures_refused(tiny):
  net, x, variables = tiny
  with pytest.raises(NasjaxError, match=r"float mixing weights of shape \(6, 5\)"):
    net.apply(variables, x, jnp.zeros((6, 4)))
  with pytest.raises(NasjaxError, match="hard=True"):
    net.apply(variables, x, ARCH, hard=True)
  NB201Space().check(ARCH)


# ------------------------------------------------------------------------------------------ the search


def brightness_dataset(n=96, size=8, seed=0):
  """4 classes told apart by brightness: something a 1-cell-per-stage NB201 supernet learns in an epoch."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 4
  x = (rng.random((n, size, size, 1)) * 0.5 + y[:, None, None, None] / 8).astype(np.float32)
  return nasdata.Dataset("bright", x, y.astype(np.int64), x[:16], y[:16].astype(np.int64), 4, (0.4,), (0.2,))


def nb201_config(method, **overrides):
  cfg = oneshot.search_config(method, space="nb201")
  cfg.update(epochs=2, batch_size=8, channels=4, cells_per_stage=1, eval_batch_size=32, crop_padding=1,
             rank_samples=3, rank_batches=1)
  cfg.update(overrides)
  return cfg


def test_nb201_configs_and_refusals():
  cfg = oneshot.search_config("gdas", space="nb201")
  assert (cfg.channels, cfg.cells_per_stage, cfg.space) == (16, 5, "nb201") and "layers" not in cfg
  assert oneshot.demo_search_config("darts", space="nb201").cells_per_stage == 1
  space = NB201Space()
  with pytest.raises(NasjaxError, match="on nb201 the one-shot methods are darts, gdas, drnas, snas, spos"):
    oneshot.Search(nb201_config("pcdarts"), space, (8, 8, 1), 4, (0.4,), (0.2,), 4)
  with pytest.raises(NasjaxError, match="cost_weight is for the darts"):
    oneshot.Search(nb201_config("darts", cost_weight=0.1), space, (8, 8, 1), 4, (0.4,), (0.2,), 4)


def test_nb201_derivation_is_the_arg_max_op_none_included():
  probs = np.full((6, 5), 0.1)
  probs[np.arange(6), [0, 3, 1, 0, 4, 2]] = 0.6
  arch = oneshot.derive_arch(NB201Space(), {"normal": probs})
  assert arch.tolist() == [0, 3, 1, 0, 4, 2]
  assert NB201Space().to_string(arch) == ("|none~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|avg_pool_3x3~1|"
                                          "nor_conv_1x1~2|")


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, write_tiny_npz):
  return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", 64, 16)


# One DARTS search on NB201 checks both the library's result (alphas, their arg-max) and the command's
# files: run twice (library and command line), the same search was compiled once per xdist worker.
TINY = {"epochs": 2, "channels": 2, "cells_per_stage": 1, "batch_size": 16, "train_subset": 0,
        "eval_batch_size": 64, "crop_padding": 1, "arch_learning_rate": 0.1}
TINY_CLI = ["--config", "demo"] + [a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def test_cli_darts_on_nb201_moves_alphas_and_writes_the_results(tmp_path, tiny_npz, capsys):
  """DARTS on the NB201 supernet: the alphas of one cell type move, the cell is their arg-max, and the
  command writes its result, plot, log and checkpoints."""
  out = tmp_path / "darts"
  rc = cli.main(["search", "--quiet", "--method", "darts", "--space", "nb201", "--data", tiny_npz, *TINY_CLI,
                 "--out", str(out)])
  assert rc == 0, capsys.readouterr().err
  result = json.loads((out / "result.json").read_text())
  assert result["space"] == "nb201" and result["method"] == "darts" and result["epochs_run"] == TINY["epochs"]
  alphas = np.asarray(result["alphas"]["normal"])
  assert alphas.shape == (6, 5) and set(result["alphas"]) == {"normal"}
  assert np.abs(alphas - 0.2).max() > 0.02  # moved from the near-uniform start
  assert result["arch"] == np.argmax(alphas, axis=1).tolist()
  assert result["genotype"] == NB201Space().to_string(result["arch"])
  assert NB201Space().from_string(result["genotype"]).tolist() == result["arch"]
  assert result["config"]["cells_per_stage"] == 1 and "layers" not in result["config"]
  assert result["plots"] == ["alphas_normal.png"] and "cell_normal.png" in result["plots_skipped"]
  assert (out / "alphas_normal.png").stat().st_size > 0
  log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert log[-1]["genotype"] == result["genotype"] and np.asarray(log[-1]["alphas"]["normal"]).shape == (6, 5)
  assert any((out / "checkpoints").iterdir())


@pytest.mark.parametrize("args, message", [
    (["--method", "pcdarts"], "on nb201 the one-shot methods are darts, gdas, drnas, snas, spos"),
    (["--method", "darts", "--cost-weight", "0.5"], "cost_weight is for the darts, nasnet and enas_micro"),
    (["--method", "spos", "--layers", "3"], "layers"),
])
def test_cli_refuses_what_nb201_does_not_have_in_one_line(args, message, tmp_path, tiny_npz, capsys):
  out = tmp_path / "refused"
  rc = cli.main(["search", "--quiet", "--space", "nb201", "--data", tiny_npz, *args, "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
  assert not out.exists()


@pytest.mark.slow
def test_gdas_and_spos_on_nb201():
  """GDAS (hard one-hot samples, only the sampled op computed) and SPOS (uniform paths, then ranked by
  regularized evolution over the weight-sharing estimator), the NB201 paper's other one-shot rows."""
  dataset = brightness_dataset()
  gdas = oneshot.run_search(nb201_config("gdas", arch_learning_rate=3e-2), NB201Space(), dataset,
                            show_progress=False)
  assert gdas["finished"] and np.asarray(gdas["alphas"]["normal"]).shape == (6, 5)
  assert gdas["arch"] == np.argmax(gdas["alphas"]["normal"], axis=1).tolist()
  spos = oneshot.run_search(nb201_config("spos", rank_samples=4), NB201Space(), dataset, show_progress=False)
  assert spos["finished"] and "alphas" not in spos and len(spos["ranking"]) >= 2
  assert spos["genotype"] == spos["ranking"][0]["genotype"] == NB201Space().to_string(spos["arch"])
  assert spos["ranking"][0]["accuracy"] >= spos["ranking"][-1]["accuracy"]


@pytest.mark.slow
def test_nb201_search_killed_mid_epoch_resumes_bitwise(tmp_path):
  dataset = brightness_dataset()
  cfg = nb201_config("darts", checkpoint_every_steps=2)
  whole = oneshot.run_search(cfg, NB201Space(), dataset, workdir=str(tmp_path / "whole"), show_progress=False)
  part = oneshot.run_search(cfg, NB201Space(), dataset, workdir=str(tmp_path / "part"), show_progress=False,
                            stop_after_steps=5)
  assert not part["finished"]
  resumed = oneshot.run_search(cfg, NB201Space(), dataset, workdir=str(tmp_path / "part"), show_progress=False)
  assert resumed["genotype"] == whole["genotype"] and resumed["alphas"] == whole["alphas"]
  strip = [{k: v for k, v in r.items() if k not in ("seconds", "steady_s_per_step")} for r in whole["history"]]
  assert [{k: v for k, v in r.items() if k not in ("seconds", "steady_s_per_step")}
          for r in resumed["history"]] == strip
  for a, b in zip(jax.tree.leaves(whole["state"]["params"]), jax.tree.leaves(resumed["state"]["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_cli_evolution_over_a_spos_trained_nb201_supernet(tmp_path, tiny_npz, capsys):
  """The SPOS paper's search on NB201: uniform single paths train the supernet, evolution ranks its cells."""
  out = tmp_path / "ws"
  rc = cli.main(["search", "--quiet", "--space", "nb201", "--strategy", "regularized_evolution", "--estimator",
                 "weight_sharing", "--config", "demo", "--data", tiny_npz, "--epochs", "1", "--channels", "2",
                 "--cells-per-stage", "1", "--batch-size", "16", "--train-subset", "0", "--rank-batches", "1",
                 "--num-archs", "6", "--strategy-option", "population_size=3", "--strategy-option",
                 "tournament_size=2", "--out", str(out)])
  assert rc == 0, capsys.readouterr().err
  result = json.loads((out / "result.json").read_text())
  assert result["space"] == "nb201" and result["num_evaluated"] == 6 and result["executor"] == "vmap"
  assert result["config"]["cells_per_stage"] == 1 and "layers" not in result["config"]
  assert NB201Space().from_string(result["genotype"]).tolist() == result["arch"]
  assert (out / "supernet" / "checkpoints").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["drnas", "snas"])
def test_drnas_and_snas_on_nb201(method):
  result = oneshot.run_search(nb201_config(method, epochs=1), NB201Space(), brightness_dataset(),
                              show_progress=False)
  probs = np.asarray(result["alphas"]["normal"])
  assert result["finished"] and probs.shape == (6, 5) and np.allclose(probs.sum(1), 1, atol=1e-4)
  assert result["arch"] == np.argmax(probs, axis=1).tolist()
