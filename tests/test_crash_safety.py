"""Crash safety: a command killed at any moment and rerun ends with the result and logs of an uninterrupted run.

The default run checks retraining's checkpoints inside an epoch (``checkpoint_every_steps``): stopped mid-epoch
and resumed, it ends bitwise where an uninterrupted run ends, and says in one line what it resumed from. The
slow harness kills real ``nasjax`` processes with SIGKILL at random (seeded) moments, reruns each until it
finishes, and compares ``result.json`` and the logs with an uninterrupted run's: discrete search (random
search, regularized evolution), one-shot DARTS (demo settings, checkpoints every few steps) and retraining.
"""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from nasjax import train
from nasjax.spaces import get_genotype


def tiny_train_config(**changes):
  # One cell (drop-path, BatchNorm, the optimizer's state): a resume is exact or not whatever the depth,
  # and each cell is compiled code. test_train_cli's resume test trains the same network (a shared compile).
  cfg = train.demo_config()
  cfg.update(epochs=2, channels=4, layers=1, batch_size=16, eval_batch_size=16, drop_path=0.1, cutout=0)
  cfg.update(**changes)
  return cfg


@pytest.mark.usefixtures("fastest_compiles_for_test")
def test_retraining_resumes_exactly_from_a_checkpoint_inside_an_epoch(tmp_path, tiny_dataset, capsys):
  cfg = tiny_train_config(checkpoint_every_steps=2)  # 96 images, batch 16: 6 steps an epoch
  genotype = get_genotype("DARTS_V2")
  identity = {"genotype": genotype.to_string(), "config": train.config_to_dict(cfg)}
  whole = train.train_genotype(genotype, tiny_dataset, cfg, workdir=str(tmp_path / "whole"), show_progress=False,
                               identity=identity)
  killed = str(tmp_path / "killed")
  # Stopped after 9 steps: the newest checkpoint is at step 8 (epoch 2, step 2); step 9 is lost as in a kill.
  part = train.train_genotype(genotype, tiny_dataset, cfg, workdir=killed, show_progress=False,
                              identity=identity, stop_after_steps=9)
  assert not part.finished
  capsys.readouterr()
  resumed = train.train_genotype(genotype, tiny_dataset, cfg, workdir=killed, show_progress=False,
                                 identity=identity)
  said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("resuming")]
  assert len(said) == 1 and "1 finished epochs, 2 steps into epoch 2" in said[0], said
  assert "going on from epoch 2, step 3" in said[0]
  for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  strip = lambda h: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in h]  # noqa: E731
  assert strip(resumed.history) == strip(whole.history)
  logged = [json.loads(line) for line in open(os.path.join(killed, "metrics.jsonl"))]
  assert strip(logged) == strip(whole.history)


# --------------------------------------------------------------------------------------------------
# the SIGKILL harness (slow)

TIMING_KEYS = {"seconds", "finished", "versions", "images_per_s", "steady_s_per_step", "cost_s"}


def without_timings(value):
  """``value`` without wall times and versions, which differ between any two runs."""
  if isinstance(value, dict):
    return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
  if isinstance(value, list):
    return [without_timings(v) for v in value]
  return value


def outcome(out: pathlib.Path) -> dict:
  """What two runs must agree on: result.json and every JSONL log, timings left out."""
  found = {"result.json": without_timings(json.loads((out / "result.json").read_text()))}
  for log in sorted(out.glob("*.jsonl")):
    found[log.name] = [without_timings(json.loads(line)) for line in log.read_text().splitlines() if line.strip()]
  return found


def nasjax(argv, env) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "nasjax.cli"] + argv, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def progress_marks(out: pathlib.Path) -> int:
  """Checkpoints and log lines written so far: what a kill can lose or a rerun resume from."""
  marks = len(list((out / "checkpoints").glob("*"))) if (out / "checkpoints").is_dir() else 0
  return marks + sum(len(log.read_bytes().splitlines()) for log in out.glob("*.jsonl"))


def kill_when(proc: subprocess.Popen, out: pathlib.Path, rng: random.Random, early: bool) -> str | None:
  """SIGKILLs ``proc`` at a random moment: ``early`` during its start (imports, compiling, the first steps),
  else a random 0-3 s after it wrote something new (a checkpoint or a log line), so that the rerun has
  something to resume from and something to redo. Returns when it was killed, or None if it finished."""
  start, t0 = progress_marks(out), time.perf_counter()
  if early:
    deadline = t0 + rng.uniform(1.0, 15.0)
  else:
    while progress_marks(out) == start:
      if proc.poll() is not None:
        return None
      time.sleep(0.2)
    deadline = time.perf_counter() + rng.uniform(0.0, 3.0)
  try:
    proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
    return None
  except subprocess.TimeoutExpired:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return f"{time.perf_counter() - t0:.1f}s" + (" (start)" if early else f" (after {progress_marks(out)} marks)")


def run_with_kills(argv, out, env, rng: random.Random, kills: int) -> dict:
  """Runs ``argv`` into ``out``, killed ``kills`` times (the first during its start, the others after it made
  progress), then rerun until it finishes; returns when each kill came and what the final run said."""
  report = {"kills": [], "resumed": [], "runs": 0, "marks_before_last_run": 0}
  while True:
    report["runs"] += 1
    report["marks_before_last_run"] = progress_marks(out) if out.exists() else 0
    proc = nasjax(argv + ["--out", str(out)], env)
    if len(report["kills"]) < kills:
      when = kill_when(proc, out, rng, early=not report["kills"])
      if when is not None:
        report["kills"].append(when)
        continue
    proc.wait(timeout=1800)
    err = proc.stderr.read()
    report["resumed"] += [line for line in err.splitlines() if line.startswith("resuming")]
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return report


SCENARIOS = {
    "random_search": ["search", "--num-archs", "4", "--epochs", "1", "--channels", "4", "--layers", "3",
                      "--batch-size", "32", "--train-subset", "128", "--quiet"],
    "regularized_evolution": ["search", "--strategy", "regularized_evolution", "--strategy-option",
                              "population_size=3", "--strategy-option", "tournament_size=2", "--num-archs", "5",
                              "--epochs", "1", "--channels", "4", "--layers", "3", "--batch-size", "32",
                              "--train-subset", "128", "--quiet"],
    "darts_demo": ["search", "--method", "darts", "--config", "demo", "--epochs", "2", "--train-subset", "256",
                   "--checkpoint-every-steps", "2", "--quiet"],
    "retrain": ["train", "--genotype", "DARTS_V2", "--config", "demo", "--epochs", "2", "--channels", "4",
                "--layers", "3", "--batch-size", "32", "--train-subset", "192", "--checkpoint-every-steps", "2",
                "--quiet"],
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run(scenario, tmp_path, write_tiny_npz):
  data = write_tiny_npz(tmp_path / "data.npz", 512, 128)
  argv = SCENARIOS[scenario] + ["--data", data]
  # One compilation cache for all runs of the scenario: the reruns spend their time computing, not compiling.
  env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
  t0 = time.perf_counter()
  whole = run_with_kills(argv, tmp_path / "whole", env, random.Random(0), kills=0)
  uninterrupted_s = time.perf_counter() - t0
  assert whole["resumed"] == []
  rng = random.Random(sum(map(ord, scenario)))  # the same kill moments in every run of the harness
  killed = run_with_kills(argv, tmp_path / "killed", env, rng, kills=3)
  print(json.dumps({"scenario": scenario, "uninterrupted_s": round(uninterrupted_s, 1), **killed}))
  assert outcome(tmp_path / "killed") == outcome(tmp_path / "whole")
  if killed["marks_before_last_run"]:  # a checkpoint or logged evaluations to go on from
    assert killed["resumed"], "the final run resumed without saying so"
