"""`nasjax search` with the LSTM controller: --method nasrl (NAS-RL's settings) over the training estimator
on the NAS-RL space, and --strategy controller over the NB201 table."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from nasjax import cli
from nasjax.estimators import registry
from nasjax.spaces import get_space
from nasjax.strategies.controller import nasrl_settings

pytestmark = pytest.mark.usefixtures("fastest_compiles")


def run(capsys, *args):
  rc = cli.main(["search", "--quiet", *args])
  return rc, capsys.readouterr().err


def read(path):
  with open(path) as f:
    return json.load(f)


# ~9 CPU s each, most of it the driver's eager call of the controller's tell (search.run does not jit it).
@pytest.mark.slow
@pytest.mark.parametrize("method", [("--strategy", "controller"), ("--method", "nasrl")], ids=["enas", "nasrl"])
def test_controller_over_the_nb201_table(method, tmp_path, capsys, nb201_table):
  """The controller is an ordinary strategy: a jittable estimator (the table) is vmapped over each batch."""
  out = tmp_path / "ctl"
  rc, err = run(capsys, "--space", "nb201", *method, "--estimator", f"tabular:{nb201_table}", "--num-archs", "2",
                "--strategy-option", "batch_size=2", "--out", str(out))
  assert rc == 0, err
  result = read(out / "result.json")
  assert result["strategy"] == "controller" and result["executor"] == "vmap" and result["num_evaluated"] == 2
  if method[0] == "--method":  # NAS-RL's controller settings, under the user's batch size
    assert result["strategy_options"] == {"batch_size": 2, **nasrl_settings()}
  else:
    assert result["strategy_options"] == {"batch_size": 2}
  lines = (out / "evaluations.jsonl").read_text().splitlines()
  accuracies = [json.loads(line)["metrics"]["accuracy"] for line in lines]
  assert len(lines) == 2 and result["metrics"]["accuracy"] == max(accuracies)
  assert (out / "controller.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("space_name", ["nas_rl", "nas_rl_strided"])
def test_nasrl_trains_children_of_the_nas_rl_space_on_the_embedded_data(space_name, tmp_path, capsys):
  """NAS-RL end to end: the controller with NAS-RL's settings samples 15-layer conv chains (with a stride
  height and width per layer in nas_rl_strided), each trained for one epoch on a slice of the embedded
  Fashion-MNIST subset (about a minute of CPU: every child is its own compiled network)."""
  out = tmp_path / "nasrl"
  rc, err = run(capsys, "--method", "nasrl", "--space", space_name, "--estimator", "train", "--data", "embedded",
                "--train-subset", "128", "--epochs", "1", "--batch-size", "32", "--num-archs", "2",
                "--strategy-option", "batch_size=2", "--out", str(out))
  assert rc == 0, err
  result = read(out / "result.json")
  assert result["strategy"] == "controller" and result["executor"] == "serial" and result["num_evaluated"] == 2
  assert result["space"] == space_name
  space = get_space(space_name)
  np.testing.assert_array_equal(space.from_string(result["genotype"]), result["arch"])
  assert 0 <= result["metrics"]["accuracy"] <= 1 and result["metrics"]["params"] > 0


def test_the_training_estimator_travels_to_another_process(tiny_dataset):
  """``--executor ray`` sends the estimator to its workers by cloudpickle: the device mesh cannot travel
  (the copy builds its own) and compiled steps stay behind; the copy trains a child of the stride-split
  NAS-RL space to the same metrics."""
  cloudpickle = pytest.importorskip("ray.cloudpickle")
  space = get_space("nas_rl", num_layers=2, with_strides=True)
  cfg = registry.estimator_config("train", space)
  cfg.update({"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "crop_padding": 1})
  est = registry.build_estimator("train", space, tiny_dataset, cfg, num_candidates=1)
  arch = space.from_string("conv(h3,w1,f24,sh2,sw1)|conv(h1,w3,f24,sh1,sw2)<-0")
  copy = cloudpickle.loads(cloudpickle.dumps(est))
  assert copy.mesh.devices.size == est.mesh.devices.size and copy._programs == {}
  keep = ("accuracy", "loss", "train_loss", "params")
  want, got = est(arch, jax.random.key(0)), copy(arch, jax.random.key(0))
  assert {k: want[k] for k in keep} == {k: got[k] for k in keep}
