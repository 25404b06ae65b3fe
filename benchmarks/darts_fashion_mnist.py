"""Search then retrain on Fashion-MNIST: first-order DARTS against random search with weight sharing and a
uniformly random cell, all retrained under the same protocol, so the value of the search is visible.

The two-stage protocol of Liu, Simonyan & Yang ("DARTS: Differentiable Architecture Search", ICLR 2019,
section 3): search a cell on a small supernet with half of the training images as the architecture's
validation split, then train a larger network of the derived cell from scratch and report test accuracy.
The baselines follow Li & Talwalkar ("Random Search and Reproducibility for Neural Architecture Search",
UAI 2019): random search with weight sharing (SPOS, Guo et al., ECCV 2020: a supernet trained on uniformly
sampled paths, then the best of sampled cells under the shared weights) and one uniformly random cell of the
DARTS space, retrained at the same width and depth (``random``). Cells differ in cost (a cell of convolutions
has about twice the parameters of one of pools and skips, and a search that favours pools finds cells smaller
than almost every random one), so ``random_matched`` retrains the same random cell at the width whose network
has the parameter count closest to the DARTS cell's: the equal-budget comparison Yang et al. ("NAS
evaluation is frustratingly hard", ICLR 2020) ask for. Fashion-MNIST: Xiao, Rasul & Vollgraf,
arXiv:1708.07747, 2017.

The default budget takes about 90 minutes on one GPU:

    python benchmarks/darts_fashion_mnist.py --out runs/darts_fmnist --json runs/darts_fmnist.json

and a minutes-long CPU smoke run:

    python benchmarks/darts_fashion_mnist.py --search-epochs 1 --search-channels 4 --search-layers 3 \\
        --search-subset 400 --train-epochs 1 --train-channels 8 --train-layers 3 --train-subset 2000 \\
        --out /tmp/fmnist --json /tmp/fmnist.json

Every stage writes into ``--out/<method>/{search,retrain}`` with per-epoch checkpoints, and its finished
result into ``--out/<method>/{search,retrain}.json``: rerunning the same command resumes an interrupted
stage and reuses finished ones (a rerun with other settings for a stage is refused by the checkpoint's
identity check; choose another ``--out``). It prints one JSON object and writes it to ``--json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

from nasjax import data as nasdata
from nasjax import spaces, train
from nasjax.errors import NasjaxError
from nasjax.utils.stages import environment, load_finished, report_main, write_json_atomic
from nasjax.nn.count import count_params
from nasjax.nn.network import Network, abstract_variables
from nasjax.oneshot import run_search, search_config
from nasjax.oneshot.plots import plot_search

# The shared data folder beside the repository (``../shared/data``), or ``$NASJAX_SHARED_DATA`` when set.
SHARED_DATA = os.environ.get("NASJAX_SHARED_DATA") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
DEFAULT_DATA = os.path.join(SHARED_DATA, "fashion_mnist.npz")
METHODS = ("darts", "spos", "random", "random_matched")
# The random cell's key is derived from --seed but kept apart from every key the searches split from it.
RANDOM_CELL_STREAM = 7919


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", default=DEFAULT_DATA,
                 help="a .npz with x_train, y_train, x_test, y_test (default: fashion_mnist.npz in "
                      "$NASJAX_SHARED_DATA, else in ../shared/data beside the repository)")
  p.add_argument("--methods", default="darts,spos,random", help=f"comma-separated, among {', '.join(METHODS)}")
  p.add_argument("--search-epochs", type=int, default=20)
  p.add_argument("--search-warmup-epochs", type=int, default=0,
                 help="first search epochs that train only the weights (PC-DARTS' warm-up; DARTS and SPOS)")
  p.add_argument("--search-channels", type=int, default=16)
  p.add_argument("--search-layers", type=int, default=5)
  p.add_argument("--search-subset", type=int, default=20000,
                 help="images used by the search (half train the weights, half the architecture); 0 = all")
  p.add_argument("--train-epochs", type=int, default=15)
  p.add_argument("--train-channels", type=int, default=24)
  p.add_argument("--train-layers", type=int, default=8)
  p.add_argument("--train-subset", type=int, default=0, help="training images of the retraining; 0 = all")
  p.add_argument("--cutout", type=int, default=8, help="cutout size of the retraining (16 is for 32x32 CIFAR)")
  p.add_argument("--drop-path", type=float, default=0.2, help="drop-path probability of the retraining")
  p.add_argument("--batch-size", type=int, default=64, help="batch size of both stages")
  p.add_argument("--rank-samples", type=int, default=100, help="cells SPOS samples and ranks by shared weights")
  p.add_argument("--spos-search-epochs", type=int, default=None,
                 help="SPOS supernet epochs (default: --search-epochs). A SPOS epoch trains one path, several "
                      "times cheaper than a DARTS epoch: give it DARTS' search time for a budget-matched row")
  p.add_argument("--match-params", type=int, default=None,
                 help="random_matched: the parameter count to match when darts is not in --methods (the "
                      "retrained DARTS cell's 'params' of an earlier run with the same retraining settings)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="runs/darts_fashion_mnist", help="work directory (checkpoints, plots)")
  p.add_argument("--json", default=None, help="also write the printed JSON object here")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  args = p.parse_args(argv)
  if os.path.exists(args.data):
    # One spelling per file, so a rerun from another directory still finds its finished stages.
    args.data = os.path.realpath(args.data)
  methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
  unknown = [m for m in methods if m not in METHODS]
  if not methods or unknown or len(set(methods)) != len(methods):
    raise NasjaxError(f"--methods must be distinct names among {', '.join(METHODS)}; got {args.methods!r}")
  if args.match_params is not None and args.match_params < 1:
    raise NasjaxError(f"--match-params must be a positive integer; got {args.match_params}")
  if "random_matched" in methods and args.match_params is None and (
      "darts" not in methods or methods.index("darts") > methods.index("random_matched")):
    raise NasjaxError("--methods: random_matched matches the size of the DARTS cell; list darts before it "
                      "or give --match-params")
  args.methods = methods
  if args.spos_search_epochs is None:
    args.spos_search_epochs = args.search_epochs
  for name in ("search_epochs", "spos_search_epochs", "search_channels", "search_layers", "train_epochs",
               "train_channels", "train_layers", "batch_size", "rank_samples"):
    if getattr(args, name) < 1:
      raise NasjaxError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}")
  if not 0.0 <= args.drop_path < 1.0:
    raise NasjaxError(f"--drop-path must be in [0, 1); got {args.drop_path}")
  if args.search_warmup_epochs >= args.search_epochs:
    raise NasjaxError(f"--search-warmup-epochs {args.search_warmup_epochs} leaves no epoch of the "
                      f"{args.search_epochs} search epochs to update the architecture")
  for name in ("search_subset", "train_subset", "cutout", "seed", "search_warmup_epochs"):
    if getattr(args, name) < 0:
      raise NasjaxError(f"--{name.replace('_', '-')} must be >= 0; got {getattr(args, name)}")
  if args.search_subset and args.search_subset < 2 * args.batch_size:
    raise NasjaxError(f"--search-subset {args.search_subset} leaves less than one batch of {args.batch_size} "
                      "for each of the weight and architecture splits; use at least twice the batch size")
  return args


def search_cfg(method: str, args):
  """The paper's search setting of ``method``, scaled to the command line's budget.

  Fashion-MNIST is 28x28 grey: no flips, so the search sees the images the retraining sees.
  """
  cfg = search_config(method)
  cfg.update(epochs=args.search_epochs, channels=args.search_channels, layers=args.search_layers,
             batch_size=args.batch_size, train_subset=args.search_subset, seed=args.seed, flip=False,
             order=1, rank_samples=args.rank_samples, eval_batch_size=500)
  if method == "spos":
    cfg.epochs = args.spos_search_epochs
  else:
    cfg.arch_warmup_epochs = args.search_warmup_epochs
  # A hardware-aware search (latency_fashion_mnist.py) adds a cost term; this script's own runs have none,
  # so their configs, and the finished stages keyed by them, stay as they were.
  for name in ("cost_weight", "cost_metric", "cost_target", "latency_table", "latency_batch", "latency_runs",
               "latency_warmup"):
    if getattr(args, name, None) is not None:
      cfg[name] = getattr(args, name)
  return cfg


def retrain_cfg(args):
  """The DARTS evaluation protocol with the command line's epochs, width, depth and batch size."""
  cfg = train.darts_eval_config()
  cfg.update(epochs=args.train_epochs, channels=args.train_channels, layers=args.train_layers,
             batch_size=args.batch_size, train_subset=args.train_subset, seed=args.seed, cutout=args.cutout,
             flip=False, drop_path=args.drop_path)
  return cfg




def search_stage(method: str, args, space, dataset, outdir: str) -> dict:
  """Runs (or resumes, or reuses) the search of ``method``; returns its genotype and timing."""
  cfg = search_cfg(method, args)
  settings = {"data": args.data, "config": train.config_to_dict(cfg)}
  done_path = os.path.join(outdir, "search.json")
  done = load_finished(done_path, settings)
  if done is not None:
    return done
  t0 = time.perf_counter()
  result = run_search(cfg, space, dataset, workdir=os.path.join(outdir, "search"),
                      identity={"data": args.data}, show_progress=not args.quiet)
  seconds = time.perf_counter() - t0
  history = result["history"]
  stage = {"settings": settings, "genotype": result["genotype"], "arch": [int(v) for v in result["arch"]],
           "search_seconds": seconds,
           # Epoch time summed over the history counts an interrupted and resumed search in full.
           "search_epoch_seconds": sum(r["seconds"] for r in history),
           "search_epochs_run": result["epochs_run"],
           "supernet_valid_accuracy": history[-1]["valid_accuracy"] if history else None}
  if method == "spos":
    stage["weight_sharing_accuracy"] = result["ranking"][0]["accuracy"]
    stage["ranked_cells"] = len(result["ranking"])
  else:
    stage["derived_at_epoch"] = result["derived_at_epoch"]
    stage["normal_skips"] = history[-1].get("normal_skips")
    stage["plots"] = plot_search(history, spaces.Genotype.from_string(result["genotype"]),
                                 space.supernet_ops, os.path.join(outdir, "plots"))
  write_json_atomic(done_path, stage)
  return stage


def random_stage(args, space) -> dict:
  key = jax.random.fold_in(jax.random.key(args.seed), RANDOM_CELL_STREAM)
  arch = space.sample(key)
  return {"genotype": space.to_string(arch), "arch": [int(v) for v in arch], "search_seconds": 0.0,
          "search_epoch_seconds": 0.0}


def retrained_params(genotype: str, channels: int, args, dataset) -> int:
  """Parameters (as the papers count them) of the retraining network of ``genotype``; nothing is run."""
  net = Network(spaces.Genotype.from_string(genotype), channels, args.train_layers, dataset.num_classes,
                auxiliary=False, scan_cells=False)
  return count_params(abstract_variables(net, dataset.input_shape)["params"])


def matched_width(genotype: str, args, dataset, target_params: int) -> dict:
  """The initial width at which ``genotype``'s retraining network comes closest to ``target_params``.

  Parameters grow about with the square of the width, so the widths tried are the even ones (a reduction
  cell halves them) from a quarter to four times ``--train-channels``; ties go to the narrower network.
  """
  low, high = max(2, args.train_channels // 8 * 2), 4 * args.train_channels
  sizes = {c: retrained_params(genotype, c, args, dataset) for c in range(low, high + 1, 2)}
  channels = min(sizes, key=lambda c: (abs(sizes[c] - target_params), c))
  if channels in (low, high) and low < high:
    raise NasjaxError(f"random_matched: no width in [{low}, {high}] brings the random cell near "
                      f"{target_params} parameters (closest {sizes[channels]} at {channels} channels)")
  return {"channels": channels, "matched_params": sizes[channels], "target_params": target_params}


def retrain_stage(genotype: str, args, dataset, outdir: str, channels: int | None = None) -> dict:
  """Retrains ``genotype`` (or resumes, or reuses the finished run) and measures it on the test set.

  ``channels`` replaces ``--train-channels`` (the size-matched random cell).
  """
  cfg = retrain_cfg(args)
  if channels is not None:
    cfg.channels = channels
  genotype = spaces.Genotype.from_string(genotype).to_string()
  settings = {"data": args.data, "genotype": genotype, "config": train.config_to_dict(cfg)}
  done_path = os.path.join(outdir, "retrain.json")
  done = load_finished(done_path, settings)
  if done is not None:
    return done
  t0 = time.perf_counter()
  fit = train.train_genotype(spaces.Genotype.from_string(genotype), dataset, cfg,
                             workdir=os.path.join(outdir, "retrain"), show_progress=not args.quiet,
                             identity=settings)
  seconds = time.perf_counter() - t0
  stage = {"settings": settings, "retrain_seconds": seconds,
           "retrain_epoch_seconds": sum(r["seconds"] for r in fit.history),
           # Parameters as the papers count them: the auxiliary head left out.
           "params": count_params(jax.device_get(fit.state["params"])),
           "test_accuracy": fit.final["eval_accuracy"], "test_loss": fit.final["eval_loss"],
           "test_accuracy_per_epoch": [r.get("eval_accuracy") for r in fit.history],
           "seconds_per_epoch": [round(r["seconds"], 1) for r in fit.history],
           "final_train_accuracy": fit.final["train_accuracy"]}
  write_json_atomic(done_path, stage)
  return stage


def run(args) -> dict:
  t_start = time.perf_counter()
  dataset = nasdata.load_dataset(args.data)
  space = spaces.get_space("darts")
  os.makedirs(args.out, exist_ok=True)
  report = {
      "benchmark": "darts_fashion_mnist",
      "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                   if k not in ("quiet", "json")},
      "data": {"name": dataset.name, "train_images": int(len(dataset.x_train)),
               "test_images": int(len(dataset.x_test)), "input_shape": list(dataset.input_shape)},
      "search_config": {m: train.config_to_dict(search_cfg(m, args)) for m in args.methods
                        if not m.startswith("random")},
      "retrain_config": train.config_to_dict(retrain_cfg(args)),
      **environment(),
      "methods": {},
  }
  for method in args.methods:
    outdir = os.path.join(args.out, method)
    os.makedirs(outdir, exist_ok=True)
    channels = None
    if method.startswith("random"):
      found = random_stage(args, space)
      if method == "random_matched":
        target = args.match_params if args.match_params is not None else report["methods"]["darts"]["params"]
        found.update(matched_width(found["genotype"], args, dataset, target))
        channels = found["channels"]
    else:
      found = search_stage(method, args, space, dataset, outdir)
    trained = retrain_stage(found["genotype"], args, dataset, outdir, channels)
    # The encoding stays in <method>/search.json; the report shows the genotype in the papers' notation.
    entry = {k: v for k, v in found.items() if k not in ("settings", "arch")}
    entry.update({k: v for k, v in trained.items() if k != "settings"})
    # What the budget counts, also when a stage was reused from an earlier run (total_seconds is this run's).
    entry["search_plus_retrain_seconds"] = entry["search_seconds"] + entry["retrain_seconds"]
    report["methods"][method] = entry
    print(f"[{method}] test accuracy {entry['test_accuracy']:.4f}, {entry['params']} params, "
          f"search {entry['search_seconds']:.0f} s, retrain {entry['retrain_seconds']:.0f} s", file=sys.stderr)
  report["total_seconds"] = time.perf_counter() - t_start
  return report


def main(argv=None) -> int:
  return report_main(parse_args, run, argv)


if __name__ == "__main__":
  sys.exit(main())
