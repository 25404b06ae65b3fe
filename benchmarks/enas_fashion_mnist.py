"""ENAS micro search on Fashion-MNIST, its cell retrained under the DARTS benchmark's protocol, and the rank
agreement of ENAS's shared weights with stand-alone training.

ENAS (Pham, Guan, Zoph, Le & Dean, "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018):
an LSTM controller samples cells of the ENAS micro space, one shared network trains on its samples, and the
controller is rewarded by the samples' validation accuracy under the shared weights
(:mod:`nasjax.oneshot.enas`). Three measurements:

1. the search at a budget that fits a 2-core CPU (a class-balanced subset of the training images, a narrow
   shared network, few epochs), with its per-epoch records (mean reward, controller entropy and baseline,
   the controller's most likely cell);
2. the time of one controller step (``ask`` of a batch of samples + ``tell`` of their rewards, one jitted
   function, the shared network left out);
3. the derived cell retrained exactly as in ``darts_fashion_mnist.py`` (that script's ``retrain_stage``:
   16 channels, 5 cells, 7 epochs, batch 64, all 60,000 images, no cutout or drop-path; the README's table has
   the DARTS cell at 93.21% and size-matched random cells at 92.62-93.10%). ``--retrain-epochs-now N`` runs
   N more of those epochs and stops (the same checkpoints; rerunning goes on, without it to the end), so a
   short budget is compared with the DARTS cell's accuracy after the same epoch of the same 7-epoch schedule.

``--rank-agreement`` adds: ``--rank-cells`` distinct cells sampled from the trained controller, each scored by
the shared weights on ``--rank-batches`` validation batches (as ``EnasSearch.derive`` scores) and by a short
stand-alone training (``ShortTrainingEstimator``: 8 channels, 3 cells, ``--rank-epochs`` epochs on
``--rank-train-subset`` images, accuracy on a ``--rank-valid-fraction`` split of the training set), and the
Kendall tau between the two (scipy's, with its p-value). Sciuto et al. ("Evaluating the Search Phase of
Neural Architecture Search", ICLR 2020) found ENAS's shared-weight ranking close to uncorrelated with
stand-alone ranking on small spaces; this measures it here.

A run of seconds (the script's plumbing)::

    python benchmarks/enas_fashion_mnist.py --search-epochs 1 --search-subset 640 --search-channels 4 \\
      --search-layers 3 --controller-steps 2 --controller-batch 2 --derive-samples 4 --rank-agreement \\
      --rank-cells 3 --rank-train-subset 256 --train-channels 4 --train-layers 3 --train-subset 640 \\
      --train-epochs 1 --out /tmp/enas_fmnist --json /tmp/enas_fmnist.json

Stages are kept in ``--out/{search,rank,retrain}.json`` and reused by a rerun with the same settings; the
search and the retraining resume from their checkpoints. Prints one JSON object (also written to ``--json``)
with the commit, the command and the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import darts_fashion_mnist as darts_bench
import provenance
from nasjax import data as nasdata
from nasjax import spaces, train
from nasjax.errors import NasjaxError
from nasjax.estimators.train import ShortTrainingEstimator, short_training_config
from nasjax.oneshot import enas
from nasjax.utils.stages import check_counts, load_finished, report_main, write_json_atomic

# The README's Fashion-MNIST table (16 channels, 5 cells, 7 epochs, all 60,000 images): test accuracy after
# each epoch of the first-order DARTS cell, and the final accuracies of the three size-matched random cells.
DARTS_CELL = {"params": 87690, "test_accuracy_per_epoch": [0.852, 0.883, 0.904, 0.920, 0.928, 0.931, 0.9321]}
RANDOM_MATCHED_CELLS = {"params": [97378, 75590, 97186], "test_accuracy": [0.9262, 0.9272, 0.9310]}
# Key streams kept apart from every key the search splits from --seed.
RANK_SAMPLE_STREAM, RANK_TRAIN_STREAM = 104729, 1299709


def add_retraining_options(p: argparse.ArgumentParser) -> None:
  """The options of the found cell's retraining under darts_fashion_mnist.py's protocol, resumable in parts;
  shared with the other benchmarks that retrain a found cell (latency_fashion_mnist.py)."""
  p.add_argument("--train-epochs", type=int, default=7)
  p.add_argument("--retrain-epochs-now", type=int, default=None,
                 help="run at most this many more of the retraining's --train-epochs epochs in this call (it "
                      "resumes from its checkpoints: rerun to go on; without this option it finishes)")
  p.add_argument("--train-channels", type=int, default=16)
  p.add_argument("--train-layers", type=int, default=5)
  p.add_argument("--train-subset", type=int, default=0, help="training images of the retraining; 0 = all")
  p.add_argument("--cutout", type=int, default=0)
  p.add_argument("--drop-path", type=float, default=0.0)


def check_retraining_options(args: argparse.Namespace) -> None:
  """One clear error for a retraining option of :func:`add_retraining_options` out of its range."""
  check_counts(args, positive=("train_epochs", "train_channels", "train_layers"),
               non_negative=("train_subset", "cutout"))
  if args.retrain_epochs_now is not None and not 1 <= args.retrain_epochs_now <= args.train_epochs:
    raise NasjaxError(f"--retrain-epochs-now must be in [1, --train-epochs={args.train_epochs}]; "
                      f"got {args.retrain_epochs_now}")
  if not 0.0 <= args.drop_path < 1.0:
    raise NasjaxError(f"--drop-path must be in [0, 1); got {args.drop_path}")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", default=darts_bench.DEFAULT_DATA,
                 help="a .npz with x_train, y_train, x_test, y_test (default: fashion_mnist.npz in "
                      "$NASJAX_SHARED_DATA, else in ../shared/data beside the repository)")
  p.add_argument("--search-epochs", type=int, default=10)
  p.add_argument("--search-channels", type=int, default=8)
  p.add_argument("--search-layers", type=int, default=5)
  p.add_argument("--search-subset", type=int, default=10000,
                 help="training images the search uses (--search-valid-fraction of them reward the controller); "
                      "0 = all 60,000")
  p.add_argument("--search-valid-fraction", type=float, default=0.2)
  p.add_argument("--search-batch-size", type=int, default=64)
  p.add_argument("--controller-steps", type=int, default=10, help="controller steps per search epoch (ENAS: 30)")
  p.add_argument("--controller-batch", type=int, default=10, help="samples per controller step (ENAS: 10)")
  p.add_argument("--derive-samples", type=int, default=100, help="cells sampled at the end, best kept (ENAS: 100)")
  p.add_argument("--derive-batches", type=int, default=4, help="validation batches each derived cell is scored on")
  p.add_argument("--controller-timing-steps", type=int, default=20, help="timed ask + tell calls after the compile")
  p.add_argument("--rank-agreement", action="store_true",
                 help="Kendall tau of shared-weight and stand-alone accuracy on --rank-cells sampled cells")
  p.add_argument("--rank-cells", type=int, default=20)
  p.add_argument("--rank-batches", type=int, default=8, help="validation batches of the shared-weight score")
  p.add_argument("--rank-epochs", type=int, default=1, help="epochs of each stand-alone short training")
  p.add_argument("--rank-train-subset", type=int, default=1000, help="images of each stand-alone short training")
  p.add_argument("--rank-valid-fraction", type=float, default=0.05,
                 help="fraction of the training set held out to score each stand-alone training (0.05: 3,000 images)")
  p.add_argument("--no-retrain", action="store_true", help="search (and rank) only")
  add_retraining_options(p)
  p.add_argument("--train-batch-size", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="runs/enas_fashion_mnist", help="work directory (checkpoints, stages)")
  p.add_argument("--json", default=None, help="also write the printed JSON object here")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  args = p.parse_args(argv)
  if os.path.exists(args.data):
    args.data = os.path.realpath(args.data)  # one spelling per file: a rerun elsewhere finds its stages
  for name in ("search_epochs", "search_channels", "search_layers", "search_batch_size", "controller_steps",
               "controller_batch", "derive_samples", "derive_batches", "controller_timing_steps", "rank_cells",
               "rank_batches", "rank_epochs", "rank_train_subset", "train_batch_size"):
    if getattr(args, name) < 1:
      raise NasjaxError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}")
  check_retraining_options(args)
  for name in ("search_subset", "seed"):
    if getattr(args, name) < 0:
      raise NasjaxError(f"--{name.replace('_', '-')} must be >= 0; got {getattr(args, name)}")
  if not 0.0 < args.search_valid_fraction < 1.0:
    raise NasjaxError(f"--search-valid-fraction must be in (0, 1); got {args.search_valid_fraction}")
  if not 0.0 < args.rank_valid_fraction < 1.0:
    raise NasjaxError(f"--rank-valid-fraction must be in (0, 1); got {args.rank_valid_fraction}")
  if args.rank_cells < 3 and args.rank_agreement:
    raise NasjaxError(f"--rank-cells must be at least 3 for a rank correlation; got {args.rank_cells}")
  return args


def search_cfg(args):
  """ENAS micro's paper settings (``enas_config``) at the command line's budget. Fashion-MNIST is 28x28
  grey: no flips, so the search sees the images the retraining sees."""
  cfg = enas.enas_config("enas_micro")
  cfg.update(epochs=args.search_epochs, channels=args.search_channels, layers=args.search_layers,
             batch_size=args.search_batch_size, train_subset=args.search_subset,
             valid_fraction=args.search_valid_fraction, controller_steps=args.controller_steps,
             controller_batch=args.controller_batch, derive_samples=args.derive_samples,
             derive_batches=args.derive_batches, seed=args.seed, flip=False)
  return cfg


def retrain_args(args) -> argparse.Namespace:
  """The options ``darts_fashion_mnist``'s retraining functions read, from this script's."""
  return argparse.Namespace(train_epochs=args.train_epochs, train_channels=args.train_channels,
                            train_layers=args.train_layers, batch_size=args.train_batch_size,
                            train_subset=args.train_subset, seed=args.seed, cutout=args.cutout,
                            drop_path=args.drop_path, data=args.data, quiet=args.quiet)


def search_splits(cfg, dataset):
  """The (train, valid) split ``run_enas`` searches on, recomputed the same way for the scoring after it."""
  x, y = dataset.x_train, dataset.y_train
  if cfg.train_subset:
    x, y = nasdata.subset(x, y, cfg.train_subset, cfg.seed)
  xt, yt, xv, yv = nasdata.train_valid_split(x, y, cfg.valid_fraction, cfg.seed)
  return xt, yt.astype(np.int32), xv, yv.astype(np.int32)


def enas_search(cfg, space, dataset) -> enas.EnasSearch:
  """An ``EnasSearch`` built as ``run_enas`` builds it (the schedule's length is all it needs of the split)."""
  xt, yt, _, _ = search_splits(cfg, dataset)
  shared_steps = nasdata.Batcher(xt, yt, cfg.batch_size, seed=cfg.seed).steps_per_epoch
  return enas.EnasSearch(cfg, space, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std,
                         shared_steps)


def timed(fn):
  """(result, CPU seconds of this process (every thread), wall seconds) of ``fn()``."""
  cpu, wall = time.process_time(), time.perf_counter()
  out = fn()
  return out, time.process_time() - cpu, time.perf_counter() - wall


def search_stage(args, cfg, space, dataset, need_state: bool) -> tuple[dict, dict | None]:
  """Runs (or resumes, or reuses) the search; returns the stage record and, when ``need_state`` (the rank
  agreement scores with the shared weights) or the search ran, its final state (from the checkpoints when
  the stage is reused). A reused stage without ``need_state`` reads no checkpoint, so the retraining of a
  found cell goes on after the search's code has changed."""
  settings = {"data": args.data, "config": train.config_to_dict(cfg)}
  done_path = os.path.join(args.out, "search.json")
  done = load_finished(done_path, settings)
  if done is not None and not need_state:
    return done, None
  workdir = os.path.join(args.out, "search")
  result, cpu, wall = timed(lambda: enas.run_enas(cfg, space, dataset, workdir=workdir, identity={"data": args.data},
                                                  show_progress=not args.quiet))
  if done is not None:
    return done, result["state"]
  history = [{k: v for k, v in r.items() if k != "most_likely"} for r in result["history"]]
  for record in history:
    print(f"[search epoch] {record}", file=sys.stderr)
  stage = {"settings": settings, "genotype": result["genotype"], "arch": [int(v) for v in result["arch"]],
           "shared_weight_valid_accuracy": result["valid_accuracy"], "search_cpu_seconds": cpu,
           "search_wall_seconds": wall, "search_epoch_wall_seconds": sum(r["seconds"] for r in history),
           "epochs_run": result["epochs_run"], "history": history,
           "top_derived": [[r["valid_accuracy"], r["genotype"]] for r in result["ranking"][:5]]}
  write_json_atomic(done_path, stage)
  return stage, result["state"]


def controller_timing(args, cfg, space) -> dict:
  """CPU and wall seconds of one jitted controller step (``ask`` then ``tell``) on random rewards."""
  search_ = enas.controller(space, batch_size=cfg.controller_batch, **enas.controller_options(cfg))
  key = jax.random.key(args.seed)
  state = search_.init(key)

  @jax.jit
  def ask_tell(state, key, rewards):
    archs, state = search_.ask(state, key)
    return search_.tell(state, archs, rewards)

  def call(i, state):
    k_ask, k_reward = jax.random.split(jax.random.fold_in(key, i))
    rewards = jax.random.uniform(k_reward, (cfg.controller_batch,))
    return jax.block_until_ready(ask_tell(state, k_ask, rewards))

  state, compile_cpu, compile_wall = timed(lambda: call(0, state))
  cpu, wall = [], []
  for i in range(1, args.controller_timing_steps + 1):
    state, c, w = timed(lambda: call(i, state))  # noqa: B023 -- called at once
    cpu.append(c)
    wall.append(w)
  return {"controller_batch": cfg.controller_batch, "decisions": int(space.num_decisions),
          "first_call_cpu_seconds": compile_cpu, "first_call_wall_seconds": compile_wall,
          "timed_calls": len(cpu), "ask_tell_cpu_seconds_median": float(np.median(cpu)),
          "ask_tell_wall_seconds_median": float(np.median(wall)),
          "ask_tell_cpu_seconds_min_max": [float(min(cpu)), float(max(cpu))]}


def rank_cfg(args):
  cfg = short_training_config()
  cfg.update(epochs=args.rank_epochs, train_subset=args.rank_train_subset, valid_fraction=args.rank_valid_fraction,
             seed=args.seed)
  return cfg


def sample_distinct(search: enas.EnasSearch, state, space, count: int, key) -> np.ndarray:
  """``count`` distinct cells sampled from the trained controller (in sampling order)."""
  params = jax.device_get(state["controller"]["params"])
  sample = jax.jit(jax.vmap(lambda k: search.policy.sample(params, k).arch))
  seen, archs = set(), []
  for attempt in range(20):
    for arch in np.asarray(sample(jax.random.split(jax.random.fold_in(key, attempt), 2 * count))):
      name = space.to_string(arch)
      if name not in seen and len(archs) < count:
        seen.add(name)
        archs.append(arch)
    if len(archs) == count:
      return np.stack(archs)
  raise NasjaxError(f"the trained controller gave only {len(archs)} distinct cells in {20 * 2 * count} samples; "
                    f"ask for fewer --rank-cells")


def rank_stage(args, cfg, space, dataset, state) -> dict:
  """Shared-weight vs stand-alone accuracy of ``--rank-cells`` sampled cells, and their Kendall tau."""
  est_cfg = rank_cfg(args)
  settings = {"data": args.data, "search_config": train.config_to_dict(cfg),
              "short_training_config": train.config_to_dict(est_cfg), "cells": args.rank_cells,
              "rank_batches": args.rank_batches}
  done_path = os.path.join(args.out, "rank.json")
  done = load_finished(done_path, settings)
  if done is not None:
    return done
  search = enas_search(cfg, space, dataset)
  _, _, xv, yv = search_splits(cfg, dataset)
  b = cfg.batch_size
  n = min(len(xv) // b, args.rank_batches)
  if n < 1:
    raise NasjaxError(f"the search's validation split ({len(xv)} images) has no batch of {b}")
  images = nasdata.normalize(jnp.asarray(xv[:n * b], jnp.float32), dataset.mean, dataset.std)
  images = images.reshape(n, b, *images.shape[1:])
  labels = jnp.asarray(yv[:n * b], jnp.int32).reshape(n, b)
  archs = sample_distinct(search, state, space, args.rank_cells,
                          jax.random.fold_in(jax.random.key(args.seed), RANK_SAMPLE_STREAM))
  shared, shared_cpu, _ = timed(lambda: np.asarray(search.score(state["params"], state["batch_stats"],
                                                                jnp.asarray(archs), images, labels)))
  estimator = ShortTrainingEstimator(space, dataset, est_cfg, model="supernet")
  train_key = jax.random.fold_in(jax.random.key(args.seed), RANK_TRAIN_STREAM)
  cells, t_cpu = [], time.process_time()
  for i, arch in enumerate(archs):
    metrics = estimator(arch, jax.random.fold_in(train_key, i))
    cells.append({"genotype": space.to_string(arch), "shared_weight_accuracy": float(shared[i]),
                  "stand_alone_accuracy": metrics["accuracy"], "stand_alone_params": metrics["params"],
                  "stand_alone_wall_seconds": metrics["cost_s"]})
    print(f"[rank] cell {i + 1}/{len(archs)}: shared {shared[i]:.4f}, stand-alone {metrics['accuracy']:.4f}",
          file=sys.stderr)
  standalone_cpu = time.process_time() - t_cpu
  from scipy import stats  # noqa: PLC0415 -- a jax dependency, needed only here
  a = [c["shared_weight_accuracy"] for c in cells]
  s = [c["stand_alone_accuracy"] for c in cells]
  tau = stats.kendalltau(a, s)
  rho = stats.spearmanr(a, s)
  stage = {"settings": settings, "kendall_tau": float(tau.statistic), "kendall_p_value": float(tau.pvalue),
           "spearman_rho": float(rho.statistic), "spearman_p_value": float(rho.pvalue),
           "shared_weight_score": f"accuracy on {n} validation batches of {b} of the search's split, BN on batch "
                                  "statistics (EnasSearch.score, as derive)",
           "stand_alone_budget": (f"ShortTrainingEstimator (supernet model): {est_cfg.channels} channels, "
                                  f"{est_cfg.layers} cells, {est_cfg.epochs} epoch(s) on {est_cfg.train_subset} "
                                  f"images, batch {est_cfg.batch_size}, accuracy on its {est_cfg.valid_fraction:g} "
                                  "validation split of the training set"),
           "shared_weight_scoring_cpu_seconds": shared_cpu, "stand_alone_cpu_seconds": standalone_cpu,
           "shared_weight_accuracy_range": [min(a), max(a)], "stand_alone_accuracy_range": [min(s), max(s)],
           "cells": cells}
  write_json_atomic(done_path, stage)
  return stage


def retrain(args, genotype: str, dataset) -> dict:
  """The DARTS benchmark's retraining of ``genotype``: its ``retrain_stage`` when the run is to finish,
  else the same training (same settings, checkpoints and identity, so a later full run resumes it) for
  ``--retrain-epochs-now`` more epochs."""
  rargs = retrain_args(args)
  params = darts_bench.retrained_params(genotype, args.train_channels, rargs, dataset)
  if args.retrain_epochs_now is None or args.retrain_epochs_now == args.train_epochs:
    stage = darts_bench.retrain_stage(genotype, rargs, dataset, args.out)
    return {**{k: v for k, v in stage.items() if k != "settings"}, "finished": True, "params": params}
  cfg = darts_bench.retrain_cfg(rargs)
  genotype = spaces.Genotype.from_string(genotype).to_string()
  settings = {"data": args.data, "genotype": genotype, "config": train.config_to_dict(cfg)}
  fit, cpu, wall = timed(lambda: train.train_genotype(
      spaces.Genotype.from_string(genotype), dataset, cfg, workdir=os.path.join(args.out, "retrain"),
      show_progress=not args.quiet, identity=settings, stop_after_epochs=args.retrain_epochs_now))
  return {"finished": fit.finished, "epochs_done": len(fit.history), "params": params,
          "test_accuracy_per_epoch": [r.get("eval_accuracy") for r in fit.history],
          "seconds_per_epoch": [round(r["seconds"], 1) for r in fit.history],
          "this_call_cpu_seconds": cpu, "this_call_wall_seconds": wall}


def run(args) -> dict:
  t_cpu, t_wall = time.process_time(), time.perf_counter()
  report = {"benchmark": "enas_fashion_mnist", **provenance.of(__file__)}
  dataset = nasdata.load_dataset(args.data)
  space = spaces.get_space("enas_micro")
  cfg = search_cfg(args)
  os.makedirs(args.out, exist_ok=True)
  report["settings"] = {k: v for k, v in vars(args).items() if k not in ("quiet", "json")}
  report["search_config"] = train.config_to_dict(cfg)
  search, state = search_stage(args, cfg, space, dataset, need_state=args.rank_agreement)
  report["search"] = {k: v for k, v in search.items() if k not in ("settings", "arch")}
  report["controller_step"] = controller_timing(args, cfg, space)
  if args.rank_agreement:
    report["rank_agreement"] = {k: v for k, v in rank_stage(args, cfg, space, dataset, state).items()
                                if k != "settings"}
  if not args.no_retrain:
    report["retrain_config"] = train.config_to_dict(darts_bench.retrain_cfg(retrain_args(args)))
    report["retrain"] = retrain(args, search["genotype"], dataset)
    done = len(report["retrain"]["test_accuracy_per_epoch"])
    protocol = (args.train_channels, args.train_layers, args.train_epochs, args.train_subset, args.cutout,
                args.drop_path, args.train_batch_size) == (16, 5, 7, 0, 0, 0.0, 64)
    if protocol and done:
      report["darts_cell_same_epoch"] = {"epoch": done, "test_accuracy": DARTS_CELL["test_accuracy_per_epoch"][done - 1],
                                         "params": DARTS_CELL["params"]}
      report["random_matched_cells_final"] = RANDOM_MATCHED_CELLS
  report["total_cpu_seconds"] = time.process_time() - t_cpu
  report["total_wall_seconds"] = time.perf_counter() - t_wall
  return report


def main(argv=None) -> int:
  return report_main(parse_args, run, argv)


if __name__ == "__main__":
  sys.exit(main())
