"""ENAS (Pham et al. 2018) on the training engine: a shared-weight step changes only the sampled ops, a
controller step only the controller, kill + resume is bitwise the uninterrupted search, the derived
architecture is the best sample under the shared weights, and bad settings are refused."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.oneshot.enas import EnasSearch, demo_enas_config, run_enas, shared_network
from nasjax.spaces import get_space

SPACES = {"nb201": {}, "enas_micro": {"num_nodes": 3}, "enas_macro": {"num_layers": 4}}
# Values are under test (which parameters a step moves, bitwise resumes), not speed: XLA's optimisation
# passes are off in this module (conftest.py); the search step's compile was most of its ~86 CPU s.
pytestmark = pytest.mark.usefixtures("fastest_compiles")


def _config(space_name):
  cfg = demo_enas_config(space_name)
  cfg.update(batch_size=8, train_subset=0, valid_fraction=0.25, derive_samples=4, layers=3, epochs=2,
             controller_steps=3, controller_batch=3)
  return cfg


@functools.lru_cache(maxsize=None)
def _search(space_name, num_classes=4):
  space = get_space(space_name, **SPACES[space_name])
  cfg = _config(space_name)
  return EnasSearch(cfg, space, (8, 8, 1), num_classes, (0.4,), (0.2,), shared_steps=9)


def _batch(tiny_dataset, phase):
  x, y = tiny_dataset.x_train[:8], tiny_dataset.y_train[:8].astype(np.int32)
  return jnp.asarray(x), jnp.asarray(y), jnp.full((8,), phase, jnp.int32)


@pytest.mark.parametrize("space_name", [s if s == "nb201" else pytest.param(s, marks=pytest.mark.slow)
                                        for s in SPACES])
def test_shared_step_changes_only_the_sampled_ops(space_name, tiny_dataset):
  search = _search(space_name)
  state = search.init_state(0)
  before = jax.device_get(state)
  x, y, phase = _batch(tiny_dataset, 0)
  after, metrics = search.step(jax.tree.map(jnp.copy, state), x, y, phase)
  after = jax.device_get(after)
  # The architecture the step sampled, from the same key.
  key = jax.random.fold_in(jax.random.wrap_key_data(before["key"]), before["step"])
  # Jitted: run eagerly, the controller's rollout and the network's switches compile op by op (~60% of
  # this test's CPU time).
  arch = jax.jit(lambda p, k: search.policy.sample(p, k).arch)(before["controller"]["params"],
                                                              jax.random.split(key)[0])

  def loss(params):
    xn = (x - 0.4) / 0.2
    logits, _ = search.net.apply({"params": params, "batch_stats": before["batch_stats"]}, xn, arch, train=True,
                                 mutable=["batch_stats"])
    return jnp.mean(logits ** 2)

  grads = jax.device_get(jax.jit(jax.grad(loss))(before["params"]))
  used = jax.tree.map(lambda g: bool(np.any(g != 0)), grads)
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), after["params"], before["params"])
  momentum = jax.tree.map(lambda m: bool(np.any(m != 0)), after["weight_opt"]["momentum"])
  assert jax.tree.leaves(changed) == jax.tree.leaves(used) == jax.tree.leaves(momentum)
  assert 0 < sum(jax.tree.leaves(changed)) < len(jax.tree.leaves(changed)), "some ops run, some do not"
  jax.tree.map(np.testing.assert_array_equal, after["controller"], before["controller"])
  assert float(metrics["shared_steps"]) == 1 and float(metrics["controller_steps"]) == 0


def test_controller_step_changes_only_the_controller(tiny_dataset):
  search = _search("nb201")
  state = search.init_state(1)
  before = jax.device_get(state)
  after, metrics = search.step(jax.tree.map(jnp.copy, state), *_batch(tiny_dataset, 1))
  after = jax.device_get(after)
  for key in ("params", "batch_stats", "weight_opt"):
    jax.tree.map(np.testing.assert_array_equal, after[key], before[key])
  assert int(after["controller"]["count"]) == 3 and bool(after["controller"]["has_baseline"])
  assert not np.array_equal(after["controller"]["params"]["head_w"], before["controller"]["params"]["head_w"])
  assert 0.0 <= float(metrics["reward"]) <= 1.0 and float(metrics["controller_steps"]) == 1


@pytest.mark.slow  # two full tiny searches (~55 s)
def test_kill_and_resume_is_bitwise_the_uninterrupted_search(tiny_dataset, tmp_path):
  space = get_space("nb201")
  cfg = _config("nb201")
  full = run_enas(cfg, space, tiny_dataset, workdir=str(tmp_path / "full"), show_progress=False)
  steps_per_epoch = len(full["history"]) and (9 + cfg.controller_steps)
  killed = run_enas(cfg, space, tiny_dataset, workdir=str(tmp_path / "killed"), show_progress=False,
                    stop_after_steps=steps_per_epoch + 10)  # inside the second epoch's controller phase
  assert not killed["finished"] and killed["epoch"] == 1
  resumed = run_enas(cfg, space, tiny_dataset, workdir=str(tmp_path / "killed"), show_progress=False)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed["state"]), jax.device_get(full["state"]))
  timeless = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
  assert timeless(resumed["history"]) == timeless(full["history"]) and resumed["ranking"] == full["ranking"]
  # The derived architecture is the best of the ranked samples, and the history has the controller's records.
  accuracies = [r["valid_accuracy"] for r in full["ranking"]]
  assert accuracies == sorted(accuracies, reverse=True) and full["arch"] == full["ranking"][0]["arch"]
  assert all(np.isfinite(h[k]) for h in full["history"] for k in ("reward", "entropy", "baseline", "train_loss"))
  space.check(np.asarray(full["arch"]))


def test_bad_settings_and_spaces_are_refused():
  cfg = _config("nb201")
  cfg.controller_steps = 0
  with pytest.raises(NasjaxError, match="controller_steps must be a positive integer"):
    EnasSearch(cfg, get_space("nb201"), (8, 8, 1), 4, (0.4,), (0.2,), shared_steps=2)
  cfg = _config("nb201")
  cfg.valid_fraction = 1.0
  with pytest.raises(NasjaxError, match="valid_fraction"):
    EnasSearch(cfg, get_space("nb201"), (8, 8, 1), 4, (0.4,), (0.2,), shared_steps=2)
  with pytest.raises(NasjaxError, match="--method nasrl --space nas_rl"):
    shared_network(get_space("nas_rl"), _config("nb201"), 4)
  cfg = _config("nb201")
  cfg.controller_baseline_decay = 1.5
  with pytest.raises(NasjaxError, match="baseline_decay"):
    EnasSearch(cfg, get_space("nb201"), (8, 8, 1), 4, (0.4,), (0.2,), shared_steps=2)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, write_tiny_npz):
  return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", 64, 16)


ENAS_CLI = ["--config", "demo", "--epochs", "1", "--batch-size", "8", "--train-subset", "0", "--valid-fraction",
            "0.25", "--controller-steps", "2", "--controller-batch", "3", "--derive-samples", "3"]


@pytest.mark.slow  # a third ENAS compile (~35 s); the library runs above cover the search itself
def test_cli_enas_writes_result_plots_and_a_retrainable_architecture(tmp_path, tiny_npz, capsys):
  from nasjax import cli
  out = tmp_path / "enas"
  rc = cli.main(["search", "--quiet", "--method", "enas", "--space", "nb201", "--data", tiny_npz, *ENAS_CLI,
                 "--out", str(out)])
  assert rc == 0, capsys.readouterr().err
  import json
  result = json.loads((out / "result.json").read_text())
  assert result["method"] == "enas" and result["space"] == "nb201" and result["plots"] == ["controller.png"]
  assert get_space("nb201").from_string(result["genotype"]).tolist() == result["arch"]
  assert result["ranking"][0] == [result["valid_accuracy"], result["genotype"]] and len(result["ranking"]) == 3
  assert {"reward", "entropy", "baseline"} <= set(result["metrics"]) and (out / "controller.png").stat().st_size
  log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert len(log) == 1 and "most_likely_genotype" in log[0] and any((out / "checkpoints").iterdir())


@pytest.mark.parametrize("args, message", [
    (["--method", "enas", "--space", "nas_rl"], "--method enas runs on enas_micro, enas_macro, darts, nasnet"),
    (["--method", "enas", "--space", "nb201", "--strategy", "random"], "--strategy is for discrete search"),
    (["--method", "enas", "--space", "nb201", "--controller-steps", "0"], "controller_steps must be a positive"),
    (["--method", "enas", "--space", "nb201", "--controller-lr", "0.1"], "unknown option --controller-lr"),
    (["--method", "nasrl", "--space", "nas_rl", "--strategy", "random"], "is the controller strategy"),
])
def test_cli_refuses_bad_enas_and_nasrl_input_in_one_line(args, message, tmp_path, tiny_npz, capsys):
  from nasjax import cli
  out = tmp_path / "refused"
  rc = cli.main(["search", "--quiet", "--data", tiny_npz, *args, "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
  assert not out.exists()
