"""benchmarks/supernet_step.py on a tiny supernet: its JSON, and a rerun served by the compilation cache."""

from __future__ import annotations

import json
import os

from benchmark_scripts import load_benchmark

# One cell (the smallest supernet the script builds) and XLA's optimisation passes off in its measuring
# processes (they read $JAX_DISABLE_MOST_OPTIMIZATIONS): the JSON and the cache's hit are under test, not
# the step's speed, and the cold compile is most of this test's time (41 -> ~10 CPU s).
TINY = ["--modes", "weights", "--C", "4", "--layers", "1", "--batch", "2", "--steps", "1", "--warmup", "0"]


def _records(capsys) -> list[dict]:
  return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def _cache_files(path) -> set[str]:
  return {os.path.join(root, f) for root, _, files in os.walk(path) for f in files}


def test_weights_step_json_and_warm_compilation_cache(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  bench = load_benchmark("supernet_step")
  cache = str(tmp_path / "xla_cache")
  bench.main(TINY + ["--compilation-cache", cache])
  (cold,) = _records(capsys)
  assert "error" not in cold, cold.get("stderr_tail")
  assert cold["impl"] == "nasjax" and cold["mode"] == "weights" and cold["compilation_cache"] == cache
  assert 0 < cold["trace_lower_s"] <= cold["compile_s"]
  assert cold["median_s_per_step"] > 0 and cold["params"] > 0
  assert cold["compilation_cache_misses"] >= 1
  written = _cache_files(cache)
  assert written, "the first run stored no compiled program"

  # Same settings in a fresh process: the program is found in the cache, nothing new is written.
  bench.main(TINY + ["--compilation-cache", cache])
  (warm,) = _records(capsys)
  assert "error" not in warm, warm.get("stderr_tail")
  assert warm["compilation_cache_misses"] == 0 and warm["compilation_cache_hits"] >= 1
  assert _cache_files(cache) == written
  assert warm["params"] == cold["params"]
