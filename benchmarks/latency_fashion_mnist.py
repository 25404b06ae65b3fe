"""Latency-constrained one-shot search on Fashion-MNIST: first-order DARTS with an expected-latency term, its
cell's measured CPU latency beside the unconstrained DARTS cell's, and its retraining under the same protocol.

The hardware-aware search of FBNet (Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via
Differentiable Neural Architecture Search", CVPR 2019) and ProxylessNAS (Cai, Zhu & Han, ICLR 2019): a
network's latency is modelled as the sum of its ops' latencies, each measured once on this device at the
shape where it runs (:mod:`nasjax.oneshot.latency`), so the expected latency of the architecture
distribution is linear in the op probabilities and joins the architecture loss as
``cost_weight * max(0, E[latency] - cost_target)`` (:func:`nasjax.oneshot.cost.budget_penalty`, both in
units of a uniform distribution's expected latency). Everything else is ``darts_fashion_mnist.py``'s
protocol, whose functions this script calls (search: 8 channels, 5 cells, 2,000 + 2,000 images, 2 weight
warm-up epochs then 3 architecture epochs; retraining: 16 channels, 5 cells, 7 epochs, batch 64, all 60,000
images, no cutout or drop-path), so the only difference from the committed unconstrained run
(``results/darts_fashion_mnist_C8L5search_C16L5x7retrain_cpu_2026-11-27.json``, read with ``--reference``
instead of searching again: 93.21% after 7 epochs) is the latency term.

Stages, each kept in ``--out`` and reused by a rerun with the same settings:

1. ``search_table.json``: the op latency table at the search network's shapes (``--latency-batch``
   images), and the target ``--cost-target-fraction`` x the expected edge latency of a uniform
   distribution. An unconstrained search of this budget ends close to uniform (3 epochs of Adam at
   DARTS' architecture learning rate 3e-4 move each logit by at most ~0.03), so that is the unconstrained
   search's expected latency to within a few percent; the report gives the distance of the constrained
   search's final distribution from it.
2. ``darts_latency/search.json``: the search (``darts_fashion_mnist.search_stage``, resumable).
3. ``latency.json``: the retraining-size networks (16 channels, 5 cells, 28x28x1) of the unconstrained cell,
   the found cell and a floor cell (every normal edge a skip connection, every reduction edge a 3x3 max
   pool: the cheapest cell pair of the space) measured side by side in this process: the jitted inference
   forward pass on zero-filled variables at batch 1 and ``--measure-batch``
   (:func:`nasjax.estimators.cost.measure_latency_ms`, warm-up then the median of ``--measure-runs`` calls),
   in ``--measure-rounds`` alternating rounds, the median of the rounds reported; each by the wall clock
   (what a user waits) and by this process's CPU time (what other work on a shared machine does not
   inflate: on the 2-core development machine at load 18 the wall-clock medians of one network varied 3x
   between rounds). The floor bounds the speed-up any cell choice can bring: the stem, the
   cells' 1x1 pre-processing convolutions, the concatenations and the classifier do not depend on the cell.
   The edges' part of each network is also priced with the op latency table at the retraining shapes
   (the FBNet model), and the remainder is the fixed part.
4. ``darts_latency/retrain.json``: the found cell retrained (``enas_fashion_mnist.retrain``: with
   ``--retrain-epochs-now N`` only N more of the 7 epochs, resumable; the report sets each epoch's test
   accuracy beside the unconstrained cell's after the same epoch of the same schedule).

The run of the closing note of issue 23 (2-core CPU; ~30-45 min of search, ~10-20 min per retraining epoch
under load)::

    python benchmarks/latency_fashion_mnist.py --retrain-epochs-now 2 --json runs/latency_fmnist.json

and a minutes-long smoke run::

    python benchmarks/latency_fashion_mnist.py --search-epochs 2 --search-warmup-epochs 1 --search-channels 4 \\
      --search-layers 3 --search-subset 256 --batch-size 32 --train-channels 4 --train-layers 3 \\
      --train-subset 256 --train-epochs 1 --measure-rounds 1 --measure-runs 3 --latency-runs 2 \\
      --out /tmp/latency_fmnist --json /tmp/latency_fmnist.json

Prints one JSON object (also written to ``--json``) with the commit, the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

import darts_fashion_mnist as darts_bench
import enas_fashion_mnist as enas_bench
import provenance
from nasjax import data as nasdata
from nasjax import spaces, train
from nasjax.errors import NasjaxError
from nasjax.estimators.cost import measure_latency_ms
from nasjax.nn.network import Network
from nasjax.oneshot import cost as arch_cost
from nasjax.oneshot.latency import LatencyTable
from nasjax.utils.stages import load_finished, report_main, write_json_atomic

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                         "darts_fashion_mnist_C8L5search_C16L5x7retrain_cpu_2026-11-27.json")
METHOD = "darts_latency"


def floor_genotype() -> str:
  """The cheapest cell pair of the DARTS space: identities in the normal cell, 3x3 max pools (no parameters,
  no 1x1 convolutions as a strided skip connection has) in the reduction cell."""
  def pairs(op):  # every node reads the cell's two inputs through the same op
    return [(op, 0), (op, 1)] * 4
  return spaces.Genotype(normal=pairs("skip_connect"), normal_concat=[2, 3, 4, 5], reduce=pairs("max_pool_3x3"),
                         reduce_concat=[2, 3, 4, 5]).to_string()


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", default=darts_bench.DEFAULT_DATA,
                 help="a .npz with x_train, y_train, x_test, y_test (default: fashion_mnist.npz in "
                      "$NASJAX_SHARED_DATA, else in ../shared/data beside the repository)")
  p.add_argument("--reference", default=REFERENCE,
                 help="a darts_fashion_mnist.py result file whose 'darts' cell is the unconstrained reference")
  p.add_argument("--search-epochs", type=int, default=5)
  p.add_argument("--search-warmup-epochs", type=int, default=2)
  p.add_argument("--search-channels", type=int, default=8)
  p.add_argument("--search-layers", type=int, default=5)
  p.add_argument("--search-subset", type=int, default=4000)
  p.add_argument("--batch-size", type=int, default=64, help="batch size of the search and the retraining")
  p.add_argument("--cost-weight", type=float, default=1.0, help="weight of the latency term")
  p.add_argument("--cost-target-fraction", type=float, default=0.5,
                 help="the target as a fraction of a uniform distribution's expected edge latency (see stage 1)")
  p.add_argument("--latency-batch", type=int, default=64,
                 help="images per op measurement of the search's latency table (64: the ops' compute, where at "
                      "batch 1 and 8 channels every op costs about one dispatch)")
  p.add_argument("--latency-runs", type=int, default=20)
  p.add_argument("--latency-warmup", type=int, default=3)
  p.add_argument("--latency-table", default=None, help="op latency table file (default: --out/latency_table.json, "
                 "so the run's table stays with it)")
  p.add_argument("--measure-batch", type=int, default=64, help="the user batch of the network measurements (and 1)")
  p.add_argument("--measure-rounds", type=int, default=5, help="alternating rounds of the network measurements")
  p.add_argument("--measure-runs", type=int, default=20, help="timed calls per network, batch and round")
  p.add_argument("--no-retrain", action="store_true", help="search and measure only")
  p.add_argument("--no-measure", action="store_true",
                 help="leave out stage 3 (a finished latency.json is still reported): retrain while another call "
                      "measures")
  enas_bench.add_retraining_options(p)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="runs/latency_fashion_mnist", help="work directory (checkpoints, stages)")
  p.add_argument("--json", default=None, help="also write the printed JSON object here")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  args = p.parse_args(argv)
  if os.path.exists(args.data):
    args.data = os.path.realpath(args.data)  # one spelling per file: a rerun elsewhere finds its stages
  for name in ("search_epochs", "search_channels", "search_layers", "batch_size", "latency_batch", "latency_runs",
               "measure_batch", "measure_rounds", "measure_runs"):
    if getattr(args, name) < 1:
      raise NasjaxError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}")
  enas_bench.check_retraining_options(args)
  for name in ("search_subset", "search_warmup_epochs", "latency_warmup", "seed"):
    if getattr(args, name) < 0:
      raise NasjaxError(f"--{name.replace('_', '-')} must be >= 0; got {getattr(args, name)}")
  if args.search_warmup_epochs >= args.search_epochs:
    raise NasjaxError(f"--search-warmup-epochs {args.search_warmup_epochs} leaves no architecture epoch of "
                      f"the {args.search_epochs} search epochs")
  if not args.cost_weight > 0:
    raise NasjaxError(f"--cost-weight must be > 0 (this is the latency-constrained search); got {args.cost_weight}")
  if not 0 < args.cost_target_fraction <= 1:
    raise NasjaxError(f"--cost-target-fraction must be in (0, 1]; got {args.cost_target_fraction}")
  # What darts_fashion_mnist's search_cfg reads besides the options above; cost_target is set by stage 1.
  args.rank_samples, args.spos_search_epochs = 100, args.search_epochs
  args.cost_metric, args.cost_target = "latency", None
  args.latency_table = os.path.abspath(args.latency_table or os.path.join(args.out, "latency_table.json"))
  return args


def reference_cell(path: str) -> dict:
  """The unconstrained DARTS cell of a ``darts_fashion_mnist.py`` result file and its retraining figures."""
  try:
    with open(path) as f:
      entry = json.load(f)["methods"]["darts"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise NasjaxError(f"--reference {path}: not a darts_fashion_mnist.py result with a 'darts' entry ({e})") from None
  return {k: entry.get(k) for k in ("genotype", "params", "test_accuracy", "test_accuracy_per_epoch",
                                    "seconds_per_epoch", "search_seconds")} | {"file": os.path.basename(path)}


def table_costs(args, space, channels: int, layers: int, input_shape, batch: int) -> tuple[LatencyTable, dict]:
  """The op latency table at ``batch`` images and its per-edge tables for a ``channels`` x ``layers`` network."""
  table = LatencyTable(args.latency_table, batch=batch, runs=args.latency_runs, warmup=args.latency_warmup)
  tables = arch_cost.edge_cost_tables(space.supernet_ops, space.num_nodes, channels, layers, input_shape,
                                      "latency", table.op_ms)
  table.save()
  return table, tables


def search_table_stage(args, space, dataset) -> dict:
  """Stage 1: the search's op latency table and the target it gives (milliseconds of edge latency)."""
  settings = {"channels": args.search_channels, "layers": args.search_layers, "batch": args.latency_batch,
              "runs": args.latency_runs, "warmup": args.latency_warmup, "fraction": args.cost_target_fraction,
              "clocks": ["wall", "cpu"], "table": args.latency_table}
  done_path = os.path.join(args.out, "search_table.json")
  done = load_finished(done_path, settings)
  if done is not None:
    return done
  (table, tables), cpu, wall = enas_bench.timed(lambda: table_costs(
      args, space, args.search_channels, args.search_layers, dataset.input_shape, args.latency_batch))
  uniform = arch_cost.uniform_cost(tables)
  reference = space.encode(spaces.Genotype.from_string(reference_cell(args.reference)["genotype"]))
  stage = {"settings": settings, "table_key": json.loads(table.key),
           "uniform_expected_edge_ms": uniform, "cost_target_ms": args.cost_target_fraction * uniform,
           "reference_cell_edge_ms": arch_cost.derived_cost(reference, space, tables),
           "op_ms_by_edge_mean": {kind: dict(zip(space.supernet_ops, t.mean(axis=0).round(4).tolist()))
                                  for kind, t in tables.items()},
           "cpu_seconds": cpu, "wall_seconds": wall}
  write_json_atomic(done_path, stage)
  return stage


def search_history(outdir: str) -> list[dict]:
  """The search's per-epoch records (``metrics.jsonl``), without the alphas."""
  path = os.path.join(outdir, "search", "metrics.jsonl")
  if not os.path.exists(path):
    return []
  keep = ("epoch", "train_accuracy", "valid_accuracy", "genotype", "normal_skips", "expected_edge_latency",
          "derived_edge_latency", "seconds")
  records = []
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      records.append({k: record[k] for k in keep if k in record})
      alphas = record.get("alphas")
      if alphas:
        # How far the distribution moved from uniform: the largest probability change of any op.
        records[-1]["max_prob_change_from_uniform"] = max(
            abs(p - 1.0 / len(row)) for cell in alphas.values() for row in cell for p in row)
  return records


def search_stage(args, space, dataset, target_ms: float) -> dict:
  """Stage 2: ``darts_fashion_mnist.search_stage`` with the latency term; CPU seconds when it runs here."""
  args.cost_target = target_ms
  outdir = os.path.join(args.out, METHOD)
  os.makedirs(outdir, exist_ok=True)
  load = os.getloadavg()
  stage, cpu, wall = enas_bench.timed(lambda: darts_bench.search_stage("darts", args, space, dataset, outdir))
  stage = {k: v for k, v in stage.items() if k not in ("settings", "arch")}
  if wall > 60:  # the search ran in this call (a reused stage returns in well under a second)
    stage["this_call"] = {"cpu_seconds": cpu, "wall_seconds": wall, "load_average_at_start": [round(v, 2) for v in load]}
  stage["history"] = search_history(outdir)
  return stage


def zero_network(genotype: str, channels: int, layers: int, dataset):
  """The jitted inference forward pass of ``genotype``'s retraining network, and zero-filled variables."""
  net = Network(spaces.Genotype.from_string(genotype), channels, layers, dataset.num_classes, auxiliary=False)
  one = jax.ShapeDtypeStruct((1,) + tuple(dataset.input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda k, x: net.init({"params": k, "dropout": k}, x, train=False), jax.random.key(0), one)
  variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return jax.jit(lambda v, x: net.apply(v, x, train=False)[0]), variables


def latency_settings(args, cells: dict) -> dict:
  return {"cells": cells, "channels": args.train_channels, "layers": args.train_layers,
          "batches": [1, args.measure_batch], "rounds": args.measure_rounds, "runs": args.measure_runs,
          "clocks": ["wall", "cpu"], "table": args.latency_table}


def latency_stage(args, space, dataset, cells: dict) -> dict:
  """Stage 3: the retraining-size networks of ``cells`` (name -> genotype) measured side by side, and the
  edges' share of each by the op latency table at the same shapes."""
  settings = latency_settings(args, cells)
  done_path = os.path.join(args.out, "latency.json")
  done = load_finished(done_path, settings)
  if done is not None:
    return done
  t_cpu, t_wall, load = time.process_time(), time.perf_counter(), os.getloadavg()
  nets = {name: zero_network(g, args.train_channels, args.train_layers, dataset) for name, g in cells.items()}
  clocks = {"wall": time.perf_counter, "cpu": time.process_time}
  rounds = {(clock, b): {name: [] for name in cells} for b in (1, args.measure_batch) for clock in clocks}
  for r in range(args.measure_rounds):
    for (clock, b), per_cell in rounds.items():
      x = jnp.zeros((b,) + tuple(dataset.input_shape), jnp.float32)
      # Alternating order, so a drift of the shared machine's speed does not favour one network.
      for name in (list(cells) if r % 2 == 0 else list(cells)[::-1]):
        fn, variables = nets[name]
        per_cell[name].append(measure_latency_ms(fn, variables, x, runs=args.measure_runs,
                                                 warmup=args.latency_warmup, clock=clocks[clock]))
  measured_cpu = time.process_time() - t_cpu
  out = {"settings": settings, "load_average_at_start": [round(v, 2) for v in load],
         "params": {name: darts_bench.retrained_params(g, args.train_channels, args, dataset) for name, g in cells.items()}}
  for (clock, b), per_cell in rounds.items():
    median = {name: statistics.median(v) for name, v in per_cell.items()}
    # Wall time is what a user waits; this process's CPU time (all its threads) is what other work on the
    # shared machine leaves alone, so its ratios are the ones that compare across loads.
    out[f"batch_{b}" if clock == "wall" else f"batch_{b}_cpu_time"] = {
        "network_ms_median": median, "network_ms_rounds": {k: [round(t, 4) for t in v] for k, v in per_cell.items()},
        # The fastest round beside the median: other work on a shared machine only ever adds time.
        "network_ms_fastest_round": {name: min(v) for name, v in per_cell.items()},
        "speedup_found_vs_reference": median["reference"] / median["found"],
        "speedup_floor_vs_reference": median["reference"] / median["floor"]}
  # The FBNet model's split at the user batch: the edges' ops priced by the table at the retraining shapes,
  # the rest (stem, pre-processing, concatenations, classifier) the fixed part. Not at batch 1, where an
  # op alone costs about one dispatch and XLA fuses the network's ops, so the sum of ops is no model of it.
  _, tables = table_costs(args, space, args.train_channels, args.train_layers, dataset.input_shape,
                          args.measure_batch)
  part = out[f"batch_{args.measure_batch}"]
  part["table_edge_ms"] = {name: arch_cost.derived_cost(space.encode(spaces.Genotype.from_string(g)), space, tables)
                           for name, g in cells.items()}
  part["fixed_part_ms"] = {name: part["network_ms_median"][name] - part["table_edge_ms"][name] for name in cells}
  out["measure_cpu_seconds"] = measured_cpu
  out["cpu_seconds"] = time.process_time() - t_cpu
  out["wall_seconds"] = time.perf_counter() - t_wall
  write_json_atomic(done_path, out)
  return out


def retrain_args(args) -> argparse.Namespace:
  """``enas_fashion_mnist.retrain``'s options from this script's (its work directory: ``--out/darts_latency``)."""
  return argparse.Namespace(train_epochs=args.train_epochs, train_channels=args.train_channels,
                            train_layers=args.train_layers, train_batch_size=args.batch_size,
                            train_subset=args.train_subset, seed=args.seed, cutout=args.cutout,
                            drop_path=args.drop_path, data=args.data, quiet=args.quiet,
                            retrain_epochs_now=args.retrain_epochs_now, out=os.path.join(args.out, METHOD))


def run(args) -> dict:
  t_cpu, t_wall = time.process_time(), time.perf_counter()
  report = {"benchmark": "latency_fashion_mnist", **provenance.of(__file__)}
  reference = reference_cell(args.reference)
  dataset = nasdata.load_dataset(args.data)
  space = spaces.get_space("darts")
  os.makedirs(args.out, exist_ok=True)
  report["settings"] = {k: v for k, v in vars(args).items() if k not in ("quiet", "json", "latency_table")}
  report["reference"] = reference
  table = search_table_stage(args, space, dataset)
  report["search_table"] = {k: v for k, v in table.items() if k != "settings"}
  report["search_config"] = train.config_to_dict(darts_bench.search_cfg("darts", args))
  search = search_stage(args, space, dataset, table["cost_target_ms"])
  report["search"] = search
  cells = {"reference": spaces.Genotype.from_string(reference["genotype"]).to_string(),
           "found": search["genotype"], "floor": floor_genotype()}
  if args.no_measure:
    done = load_finished(os.path.join(args.out, "latency.json"), latency_settings(args, cells))
    report["latency"] = None if done is None else {k: v for k, v in done.items() if k != "settings"}
  else:
    report["latency"] = {k: v for k, v in latency_stage(args, space, dataset, cells).items() if k != "settings"}
  if not args.no_retrain:
    rargs = retrain_args(args)
    report["retrain_config"] = train.config_to_dict(darts_bench.retrain_cfg(enas_bench.retrain_args(rargs)))
    report["retrain"] = enas_bench.retrain(rargs, search["genotype"], dataset)
    per_epoch = report["retrain"]["test_accuracy_per_epoch"]
    ref = reference["test_accuracy_per_epoch"] or []
    report["reference_same_epoch"] = [
        {"epoch": i + 1, "found": a, "reference": ref[i] if i < len(ref) else None,
         "difference_points": None if i >= len(ref) or a is None else round(100 * (a - ref[i]), 2)}
        for i, a in enumerate(per_epoch)]
  report["total_cpu_seconds"] = time.process_time() - t_cpu
  report["total_wall_seconds"] = time.perf_counter() - t_wall
  return report


def main(argv=None) -> int:
  return report_main(parse_args, run, argv)


if __name__ == "__main__":
  sys.exit(main())
