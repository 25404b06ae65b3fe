"""`nasjax search --objectives ... [--constraint ...]` on the NB201 table: the Pareto front and its
hypervolume in result.json, the plot, and the refusals (one line, exit 2, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nasjax import cli
from nasjax.strategies import pareto

pytestmark = pytest.mark.usefixtures("fastest_compiles")


def run(capsys, *args):
  rc = cli.main(["search", "--quiet", "--space", "nb201", *args])
  return rc, capsys.readouterr().err


def test_nsga2_search_writes_the_pareto_front_its_hypervolume_and_a_plot(capsys, tmp_path, nb201_table):
  out = tmp_path / "run"
  rc, err = run(capsys, "--strategy", "nsga2", "--estimator", f"tabular:{nb201_table}", "--objectives",
                "accuracy:max,latency_s:min", "--constraint", "latency_s<=0.016", "--strategy-option",
                "population_size=8", "--num-archs", "24", "--out", str(out))
  assert rc == 0, err
  result = json.loads((out / "result.json").read_text())
  log = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
  assert len(log) == 24 and all("objectives" in r and "feasible" in r for r in log)
  assert all(r["feasible"] == (r["metrics"]["latency_s"] <= 0.016) for r in log)
  feasible = np.array([[r["metrics"]["accuracy"], -r["metrics"]["latency_s"]] for r in log if r["feasible"]])
  front = result["pareto"]["front"]
  got = np.array([[e["objectives"]["accuracy"], -e["objectives"]["latency_s"]] for e in front])
  # The front is exactly the non-dominated feasible evaluations, most accurate first.
  expected = feasible[pareto.pareto_mask_host(feasible)]
  assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
  assert list(got[:, 0]) == sorted(got[:, 0], reverse=True)
  ref = result["pareto"]["reference"]
  assert ref == {"accuracy": feasible[:, 0].min(), "latency_s": -feasible[:, 1].min()}
  assert result["pareto"]["hypervolume"] == pytest.approx(
      pareto.hypervolume(feasible, [ref["accuracy"], -ref["latency_s"]]))
  assert result["objectives"]["constraints"] == ["latency_s<=0.016"]
  assert result["metrics"]["latency_s"] <= 0.016
  assert result["plots"] == ["pareto_front.png"] and (out / "pareto_front.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--strategy", "nsga2", "--objectives", "acc:max"], "unknown objective 'acc': estimator tabular produces"),
    (["--strategy", "nsga2", "--objectives", "accuracy,latency_s:min", "--constraint", "flops<=3"],
     "constraint flops<=3: estimator tabular does not produce 'flops'"),
    (["--strategy", "nsga2", "--objectives", "accuracy:up"], "NAME:max or NAME:min"),
    (["--objectives", "accuracy,latency_s:min"], "give weights"),
    (["--constraint", "latency_s=0.1"], "METRIC<=BOUND"),
    (["--strategy", "nsga2"], "multi-objective: give --objectives"),
])
def test_objective_mistakes_are_refused_before_anything_is_written(capsys, tmp_path, nb201_table, args, message):
  out = tmp_path / "run"
  rc, err = run(capsys, "--estimator", f"tabular:{nb201_table}", "--num-archs", "4", "--out", str(out), *args)
  assert rc == 2 and message in err and err.count("\n") == 1, err
  assert not out.exists()


@pytest.mark.slow
def test_device_metrics_become_objectives(capsys, tmp_path, nb201_table):
  out = tmp_path / "run"
  rc, err = run(capsys, "--strategy", "nsga2", "--estimator", f"tabular:{nb201_table}", "--device-metrics",
                "--objectives", "accuracy:max,peak_activation_bytes:min", "--strategy-option", "population_size=2",
                "--num-archs", "2", "--out", str(out))
  assert rc == 0, err
  log = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
  assert all(r["metrics"]["peak_activation_bytes"] > 0 and r["metrics"]["latency_batch_s"] > 0 for r in log)
  assert json.loads((out / "result.json").read_text())["pareto"]["front"]
