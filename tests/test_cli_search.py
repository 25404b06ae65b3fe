"""`nasjax search` over spaces, strategies and estimators: refusals (one line, exit 2, nothing written)
and tiny end-to-end runs, with the search identity guarding resumes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nasjax import cli

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, write_tiny_npz):
  return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", 128, 32)


def run(capsys, *args):
  rc = cli.main(["search", "--quiet", *args])
  captured = capsys.readouterr()
  return rc, captured.err


def read(path):
  with open(path) as f:
    return json.load(f)


def records(log):
  """The search log's records without their timings (a redone evaluation takes other seconds)."""
  text = log if isinstance(log, bytes) else log.read_bytes()
  return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in text.splitlines()]


# ---------------------------------------------------------------------------------------------- refusals
BAD = [
    (["--space", "bogus"], "unknown search space 'bogus'; accepted: darts"),
    (["--strategy", "bogus"], "unknown strategy 'bogus'; accepted: grid, random"),
    (["--method", "bogus"], "accepted: one-shot darts"),
    (["--estimator", "bogus"], "unknown estimator 'bogus'; accepted: train"),
    (["--estimator", "proxy:bogus"], "unknown zero-cost proxy"),
    (["--executor", "bogus"], "unknown executor 'bogus'; accepted: auto, serial, vmap, ray"),
    (["--num-archs", "0"], "--num-archs must be a positive integer"),
    (["--num-archs", "-3"], "--num-archs must be a positive integer"),
    (["--num-archs", "two"], "--num-archs must be a positive integer"),
    (["--space", "darts", "--estimator", "tabular:t.csv"], "accepts the spaces nb201; for darts use: train"),
    (["--space", "darts", "--estimator", "proxy:synflow"], "accepts the spaces nb201"),
    (["--space", "nb201", "--estimator", "morphism"], "accepts the spaces macro, nas_rl"),
    (["--space", "macro", "--estimator", "weight_sharing"], "accepts the spaces darts, nasnet, enas_micro, nb201"),
    (["--space", "enas_macro", "--estimator", "morphism"], "accepts the spaces macro, nas_rl; for enas_macro use"),
    (["--space", "darts", "--strategy", "grid"], "grid"),
    (["--strategy", "hyperband", "--estimator", "weight_sharing"], "multi-fidelity"),
    (["--space", "nb201", "--strategy", "successive_halving", "--estimator", "proxy:synflow"], "multi-fidelity"),
    (["--strategy", "successive_halving", "--epochs", "1"], "at least 2 fidelity levels"),
    (["--space", "nb201", "--strategy", "hyperband", "--estimator", "tabular:t.csv"], "supplement"),
    (["--executor", "vmap"], "executor vmap needs a jittable estimator"),
    (["--space", "macro", "--estimator", "morphism", "--executor", "ray"], "stateful"),
    (["--strategy-option", "bogus=1"], "does not take bogus; accepted: batch_size"),
    (["--strategy-option", "novalue"], "KEY=VALUE"),
    (["--strategy", "regularized_evolution", "--strategy-option", "population_size=0"], "population_size"),
    (["--epoch", "3"], "did you mean --epochs"),
    (["--epochs", "x"], "--epochs takes an integer"),
    (["--flip=maybe"], "--flip is a flag"),
    (["--space", "nb201", "--estimator", "proxy:synflow", "--layers", "3"], "unknown option --layers"),
    (["--method", "spos", "--estimator", "train"], "--estimator is for discrete search"),
    (["--method", "random", "--strategy", "bayesopt"], "disagree"),
    (["--space", "nb201", "--estimator", "tabular:no_such.csv"], "does not exist"),
    (["--config", "bogus"], "invalid choice"),
    (["stray"], "unexpected argument 'stray'"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, capsys):
  out = tmp_path / "out"
  rc, err = run(capsys, "--out", str(out), *args)
  assert rc == 2, err
  assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
  assert message in err, err
  assert not out.exists()


def test_a_file_that_is_not_an_nb201_table_is_refused_before_anything_is_written(tmp_path, capsys):
  bad = tmp_path / "bad.csv"
  bad.write_text("arch_str,x\n|none~0|,1\n")
  rc, err = run(capsys, "--space", "nb201", "--estimator", f"tabular:{bad}", "--out", str(tmp_path / "out"))
  assert rc == 2 and "missing column" in err and err.count("\n") == 1
  assert not (tmp_path / "out").exists()


def test_show_config_lists_the_settings_every_key_an_option(capsys):
  assert cli.main(["search", "--space", "nb201", "--estimator", "proxy:synflow", "--channels", "8",
                   "--show-config"]) == 0
  shown = json.loads(capsys.readouterr().out)
  assert shown["config"] == {"batch_size": 64, "channels": 8, "cells_per_stage": 5, "seed": 0}


# ---------------------------------------------------------------------------------------------- runs
def test_tabular_evolution_on_nb201_and_its_resume_identity(tmp_path, capsys, nb201_table):
  table = nb201_table  # conftest.py: --shared-data, $NASJAX_SHARED_DATA or ../shared/data; skipped if absent
  out = tmp_path / "re"
  base = ["--space", "nb201", "--estimator", f"tabular:{table}", "--num-archs", "12", "--out", str(out)]
  args = base + ["--strategy", "regularized_evolution", "--strategy-option", "population_size=4",
                 "--strategy-option", "tournament_size=2"]
  rc, err = run(capsys, *args)
  assert rc == 0, err
  result = read(out / "result.json")
  assert (result["strategy"], result["method"], result["executor"], result["fitness"]) == (
      "regularized_evolution", "regularized_evolution", "vmap", "accuracy")
  assert result["estimator"] == f"tabular:{table}" and result["num_evaluated"] == 12
  assert result["strategy_options"] == {"population_size": 4, "tournament_size": 2}
  assert 0 < result["metrics"]["test_accuracy"] < 100 and result["genotype"].startswith("|")
  first = json.loads((out / "evaluations.jsonl").read_text().splitlines()[0])
  assert first["identity"]["strategy"] == "regularized_evolution" and first["identity"]["estimator"] == "tabular"
  # A finished result is never overwritten.
  rc, err = run(capsys, *args)
  assert rc == 2 and "already exists" in err
  # A search that lost its result.json (killed at the very end) resumes from its log; other settings are
  # refused and nothing is lost.
  (out / "result.json").unlink()
  log = (out / "evaluations.jsonl").read_bytes()
  rc, err = run(capsys, *base, "--strategy", "regularized_evolution", "--strategy-option", "population_size=5",
                "--strategy-option", "tournament_size=2")
  assert rc == 2 and "another search" in err and "strategy_options" in err and err.count("\n") == 1
  rc, err = run(capsys, *base, "--method", "random")
  assert rc == 2 and "differs in: strategy" in err
  assert (out / "evaluations.jsonl").read_bytes() == log
  rc, err = run(capsys, *args)
  assert rc == 0, err
  again = read(out / "result.json")
  assert again["genotype"] == result["genotype"] and again["metrics"] == result["metrics"]
  assert (out / "evaluations.jsonl").read_bytes() == log
  # Killed mid-search (5 records written, the 6th cut): the rerun ends with the uninterrupted log and result.
  (out / "result.json").unlink()
  lines = log.splitlines(keepends=True)
  (out / "evaluations.jsonl").write_bytes(b"".join(lines[:5]) + lines[5][:20])
  rc, err = run(capsys, *args)
  assert rc == 0, err
  assert records(out / "evaluations.jsonl") == records(log) and read(out / "result.json")["arch"] == result["arch"]
  # A log damaged before its last line is not a kill: refused in one line, the file left as it is.
  (out / "result.json").unlink()
  damaged = b"".join(lines[:2]) + b"garbage\n" + b"".join(lines[3:])
  (out / "evaluations.jsonl").write_bytes(damaged)
  rc, err = run(capsys, *args)
  assert rc == 2 and "damaged" in err and err.count("\n") == 1
  assert (out / "evaluations.jsonl").read_bytes() == damaged


def test_hyperband_over_the_tabular_fidelity_levels(tmp_path, capsys, nb201_table):
  table = nb201_table
  supplement = os.path.join(os.path.dirname(table), "nb201_supplement_12ep_unverified.csv")
  if not os.path.isfile(supplement):
    pytest.skip("no 12-epoch supplement beside the NB201 table")
  out = tmp_path / "hb"
  rc, err = run(capsys, "--space", "nb201", "--strategy", "hyperband", "--estimator", f"tabular:{table}",
                "--supplement", supplement, "--num-archs", "3", "--out", str(out))
  assert rc == 0, err
  result = read(out / "result.json")
  assert result["strategy_options"]["resources"] == [12.0, 200.0] and result["fidelity"] == 1
  levels = {json.loads(line)["fidelity"] for line in (out / "evaluations.jsonl").read_text().splitlines()}
  assert levels == {0, 1}


@pytest.mark.parametrize("executor", ["serial", pytest.param("auto", marks=pytest.mark.slow)])
def test_proxy_search_on_nb201(executor, tmp_path, tiny_npz, capsys):
  # serial: one candidate per program keeps NB201's op switch, a compile half as long as vmap's (where every
  # switch becomes a select over all ops); auto = vmap is covered too, among the slow tests.
  out = tmp_path / "proxy"
  rc, err = run(capsys, "--space", "nb201", "--estimator", "proxy:synflow", "--data", tiny_npz, "--channels", "4",
                "--cells-per-stage", "1", "--batch-size", "8", "--num-archs", "2", "--strategy-option",
                "batch_size=2", "--executor", executor, "--out", str(out))
  assert rc == 0, err
  result = read(out / "result.json")
  assert result["executor"] == ("vmap" if executor == "auto" else executor)
  assert result["fitness"] == "score" and result["num_evaluated"] == 2
  assert np.isfinite(result["metrics"]["score"]) and len(result["ranking"]) == 2


def test_hyperband_with_the_train_estimator_on_a_macro_space(tmp_path, tiny_npz, capsys):
  out = tmp_path / "hb_train"
  rc, err = run(capsys, "--space", "macro", "--strategy", "hyperband", "--estimator", "train", "--data", tiny_npz,
                "--epochs", "2", "--batch-size", "16", "--num-archs", "2", "--out", str(out))
  assert rc == 0, err
  result = read(out / "result.json")
  assert result["strategy_options"]["resources"] == [1.0, 2.0] and result["executor"] == "serial"
  records = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
  # Hyperband's first bracket: 3 candidates for 1 epoch, the best of them promoted to 2.
  assert [(r["fidelity"], r["metrics"]["epochs"]) for r in records] == [(0, 1)] * 3 + [(1, 2)]
  assert records[3]["arch"] == max(records[:3], key=lambda r: r["metrics"]["accuracy"])["arch"]
  assert result["fidelity"] == 1 and result["metrics"]["epochs"] == 2


@pytest.mark.slow
def test_hyperband_with_the_train_estimator_on_darts(tmp_path, tiny_npz, capsys):
  out = tmp_path / "hb_darts"
  rc, err = run(capsys, "--space", "darts", "--strategy", "hyperband", "--estimator", "train", "--data", tiny_npz,
                "--epochs", "2", "--channels", "4", "--layers", "1", "--batch-size", "16", "--num-archs", "2",
                "--out", str(out))
  assert rc == 0, err
  result = read(out / "result.json")
  assert result["fidelity"] == 1 and result["num_evaluated"] == 4


@pytest.mark.slow
def test_evolution_over_a_spos_trained_supernet(tmp_path, tiny_npz, capsys):
  """The SPOS paper's search: train the supernet with uniform single paths, then evolve under its weights."""
  out = tmp_path / "ws"
  args = ["--space", "darts", "--strategy", "regularized_evolution", "--estimator", "weight_sharing",
          "--config", "demo", "--data", tiny_npz, "--epochs", "1", "--channels", "4", "--layers", "2",
          "--batch-size", "16", "--train-subset", "0", "--rank-batches", "1", "--num-archs", "6",
          "--strategy-option", "population_size=3", "--strategy-option", "tournament_size=2", "--out", str(out)]
  rc, err = run(capsys, *args)
  assert rc == 0, err
  result = read(out / "result.json")
  assert result["executor"] == "vmap" and result["num_evaluated"] == 6
  assert (out / "supernet" / "checkpoints").is_dir()


@pytest.mark.slow
def test_local_search_with_network_morphisms_on_a_macro_space(tmp_path, tiny_npz, capsys):
  out = tmp_path / "morph"
  rc, err = run(capsys, "--space", "macro", "--strategy", "local_search", "--estimator", "morphism",
                "--data", tiny_npz, "--epochs", "1", "--finetune-epochs", "1", "--batch-size", "16",
                "--crop-padding", "0", "--num-archs", "3", "--out", str(out))
  assert rc == 0, err
  assert read(out / "result.json")["num_evaluated"] == 3
  assert (out / "morphism_archive.msgpack").is_file()
