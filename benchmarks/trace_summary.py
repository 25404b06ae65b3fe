"""Sums a JAX profiler trace by XLA op: where a compiled step spends its device time.

    python benchmarks/trace_summary.py TRACE_DIR [--steps N] [--hlo module.hlo.txt.gz]

Reads the ``perfetto_trace.json.gz`` that ``jax.profiler.trace(dir, create_perfetto_trace=True)`` writes
and prints JSON: the device's busy time per step (kernels summed; far below the step's wall time means the
step waits on launches or the host, not on arithmetic), kernels per step, and the ops that take the most
time, each with the JAX source op XLA recorded for it when the compiled module's HLO text is given.
Runs on the machine that made the trace or on any other: it needs only the standard library.

Sums are of event durations, so they rank ops well but can exceed the step's wall time where kernels
overlap (several streams) or a trace nests an op's event around its kernels' events; one HLO op can be
many kernels (cuDNN runs a dilated grouped convolution's backward pass as one kernel per group). A fused
op counts under its root instruction's source: on XLA:CPU the edge's input gradient is fused into the
in-place add to the node buffer, so it shows up as ``closed_call/scatter-add``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re


def _trace_file(trace_dir: str) -> str:
  found = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
  if not found:
    raise SystemExit(f"no perfetto_trace.json.gz under {trace_dir}")
  return found[-1]


def hlo_sources(hlo_text: str) -> dict[str, str]:
  """Instruction name -> the ``op_name`` of its metadata (the JAX name stack of its source)."""
  sources = {}
  for m in re.finditer(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{[^}]*op_name=\"([^\"]+)\"", hlo_text,
                       re.MULTILINE):
    sources.setdefault(m.group(1), m.group(2))
  return sources


def source_group(source: str) -> str:
  """A short key that pools an op's copies across cells and edges: direction plus the candidate op path.

  ``jit(step)/transpose(jvp(Supernet))/cell_1/.../MixedOp/candidates_7/DilConv_0/.../conv_general_dilated``
  becomes ``backward candidates_7/DilConv_0/DepthwiseConv_0/conv_general_dilated``.
  """
  if not source:
    return "(no source)"
  direction = "backward" if "transpose(" in source else "forward"
  parts = re.split(r"MixedOp\)?/", source, maxsplit=1)
  tail = parts[1] if len(parts) == 2 else "/".join(source.split("/")[-2:])
  tail = re.sub(r"(rematted_computation|checkpoint|jvp\(\)|transpose\(|\))/?", "", tail)
  return f"{direction} {tail}"


def summarize(trace_dir: str, steps: int, hlo_text: str | None = None, top: int = 30) -> dict:
  with gzip.open(_trace_file(trace_dir), "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  process_names = {e["pid"]: e["args"]["name"] for e in events
                   if e.get("ph") == "M" and e.get("name") == "process_name"}
  device_pids = {pid for pid, name in process_names.items() if name.startswith("/device:")}
  # On a CPU backend there is no device process: XLA's thunks are host events that name their HLO op.
  on_device = (lambda e: e.get("pid") in device_pids) if device_pids else (
      lambda e: "hlo_op" in (e.get("args") or {}))
  by_op = collections.defaultdict(lambda: [0.0, 0])
  busy_us = 0.0
  kernels = 0
  for e in events:
    if e.get("ph") != "X" or not on_device(e):
      continue
    op = (e.get("args") or {}).get("hlo_op") or e.get("name", "?")
    by_op[op][0] += e.get("dur", 0.0)
    by_op[op][1] += 1
    busy_us += e.get("dur", 0.0)
    kernels += 1
  sources = hlo_sources(hlo_text) if hlo_text else {}
  ranked = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]
  by_group = collections.defaultdict(float)
  for op, (us, _) in by_op.items():
    by_group[source_group(sources.get(op, ""))] += us
  groups = sorted(by_group.items(), key=lambda kv: -kv[1])[:top]
  return {
      "device_processes": sorted(process_names[p] for p in device_pids),
      "device_busy_ms_per_step": round(busy_us / 1e3 / steps, 3),
      "kernels_per_step": round(kernels / steps, 1),
      "top_ops": [{"op": op, "ms_per_step": round(us / 1e3 / steps, 3), "calls_per_step": round(n / steps, 1),
                   "source": sources.get(op, "")} for op, (us, n) in ranked],
      "top_sources": [{"source": g, "ms_per_step": round(us / 1e3 / steps, 3)} for g, us in groups],
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("trace_dir")
  ap.add_argument("--steps", type=int, default=1, help="steps the trace holds (figures are per step)")
  ap.add_argument("--hlo", default=None, help="the compiled module's HLO text (.gz accepted)")
  ap.add_argument("--top", type=int, default=30)
  args = ap.parse_args(argv)
  hlo = None
  if args.hlo:
    opener = gzip.open if args.hlo.endswith(".gz") else open
    with opener(args.hlo, "rt") as f:
      hlo = f.read()
  print(json.dumps(summarize(args.trace_dir, args.steps, hlo, args.top), indent=1))


if __name__ == "__main__":
  main()
