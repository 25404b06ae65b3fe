"""Exported network sizes and forward latency: nasjax's jitted forward beside its StableHLO and ONNX exports.

For a finished ``nasjax train`` directory this writes the network both ways ``nasjax export`` does
(:func:`nasjax.export.to_stablehlo`, :func:`nasjax.export.to_onnx`), reports the file sizes beside the
parameters' own bytes, the largest difference of each reloaded export from nasjax's logits on the same
input, and the median latency of three forwards on this machine: nasjax's jitted forward, the reloaded
StableHLO program (``jax.export.deserialize(...).call`` under ``jit``) and onnxruntime's CPU session.
The three are timed in alternating rounds in one process, so load on a shared host touches them alike;
both wall time and this process's CPU time are reported (onnxruntime and XLA each use their own thread
pools, so the two clocks can rank them differently).

  nasjax train --genotype DARTS_V2 --config demo --epochs 1 --out runs/export_source
  python benchmarks/export_latency.py --checkpoint runs/export_source --json F

Needs the ``export`` extra (jax2onnx, onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provenance  # noqa: E402

from nasjax import export  # noqa: E402
from nasjax.estimators.cost import measure_latency_ms  # noqa: E402
from nasjax.utils.stages import report_main  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--checkpoint", required=True, help="a finished `nasjax train` directory")
  p.add_argument("--batch-sizes", default="1,64", help="comma-separated batch sizes to time")
  p.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median round is reported")
  p.add_argument("--runs", type=int, default=10, help="timed calls per forward per round (median of them)")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None, help="also write the printed JSON object here")
  return p.parse_args(argv)


def run(args: argparse.Namespace, argv=None) -> dict:
  import onnxruntime

  trained = export.load_trained(args.checkpoint)
  hlo_bytes = export.to_stablehlo(trained)
  onnx_bytes = export.to_onnx(trained)
  param_bytes = sum(int(np.asarray(leaf).nbytes) for leaf in jax.tree.leaves(trained.variables))

  nasjax_forward = jax.jit(trained.forward)
  reloaded = jax.export.deserialize(bytearray(hlo_bytes))
  stablehlo_forward = jax.jit(reloaded.call)
  session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
  input_name = session.get_inputs()[0].name

  def onnx_forward(x):
    return session.run(None, {input_name: x})[0]

  rng = np.random.default_rng(args.seed)
  rows = []
  for batch in (int(b) for b in args.batch_sizes.split(",")):
    x = rng.standard_normal((batch,) + tuple(trained.input_shape)).astype(np.float32)
    xj = jnp.asarray(x)
    reference = np.asarray(nasjax_forward(xj))
    errors = {"stablehlo": float(np.max(np.abs(np.asarray(stablehlo_forward(xj)) - reference))),
              "onnx": float(np.max(np.abs(onnx_forward(x) - reference)))}
    forwards = {"nasjax_jit": (nasjax_forward, xj), "stablehlo_reloaded": (stablehlo_forward, xj),
                "onnxruntime": (onnx_forward, x)}
    timed = {name: {"wall_ms": [], "cpu_ms": []} for name in forwards}
    for _ in range(args.rounds):
      for name, (fn, arg) in forwards.items():
        timed[name]["wall_ms"].append(measure_latency_ms(fn, arg, runs=args.runs, warmup=args.warmup))
        timed[name]["cpu_ms"].append(measure_latency_ms(fn, arg, runs=args.runs, warmup=args.warmup,
                                                        clock=time.process_time))
    medians = {name: {clock: statistics.median(v) for clock, v in t.items()} for name, t in timed.items()}
    rows.append({
        "batch_size": batch,
        "max_abs_diff_from_nasjax": errors,
        "median_ms": medians,
        "onnxruntime_over_nasjax": {clock: medians["onnxruntime"][clock] / medians["nasjax_jit"][clock]
                                    for clock in ("wall_ms", "cpu_ms")},
    })

  result = {
      "benchmark": "export_latency",
      **provenance.of(__file__, argv),
      "settings": vars(args),
      "genotype": trained.genotype_string(),
      "input_shape": list(trained.input_shape),
      "trained_epochs": trained.epoch,
      "onnxruntime": onnxruntime.__version__,
      "bytes": {"parameters": param_bytes, "stablehlo": len(hlo_bytes), "onnx": len(onnx_bytes)},
      "latency": rows,
  }
  return result


def main(argv=None) -> int:
  return report_main(parse_args, lambda args: run(args, argv), argv)


if __name__ == "__main__":
  sys.exit(main())
