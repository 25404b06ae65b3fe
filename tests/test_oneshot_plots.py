"""Plots of a one-shot search: files are real PNGs, figures show the history's numbers, the cell layout is
layered, and bad histories and genotypes are refused with NasjaxError."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from benchmark_scripts import load_benchmark
from nasjax.errors import NasjaxError
from nasjax.oneshot import plots
from nasjax.spaces import Genotype, get_genotype

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
       "dil_conv_3x3", "dil_conv_5x5")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_history(epochs=4, num_edges=14, num_ops=len(OPS), seed=0, genotype=None, eigen=False):
  """Per-epoch records like run_search's: softmax probabilities of random-walk logits, rounded."""
  rng = np.random.default_rng(seed)
  logits = 1e-3 * rng.normal(size=(2, num_edges, num_ops))
  history = []
  for t in range(epochs):
    logits = logits + 0.5 * rng.normal(size=logits.shape)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    record = {"epoch": t + 1, "alphas": {"normal": np.round(p[0], 5).tolist(),
                                         "reduce": np.round(p[1], 5).tolist()},
              "train_loss": 2.0 - 0.1 * t, "valid_accuracy": 0.1 + 0.05 * t}
    if genotype is not None:
      record["genotype"] = genotype.to_string()
    if eigen:
      record["hessian_eigenvalue"] = 0.1 + 0.05 * t
    history.append(record)
  return history


def png_size(path) -> tuple[int, int]:
  """(width, height) from the IHDR chunk, after checking the signature and the chunk's CRC."""
  import zlib
  with open(path, "rb") as f:
    head = f.read(33)
  assert head[:8] == PNG_SIGNATURE
  length, kind = struct.unpack(">I4s", head[8:16])
  assert kind == b"IHDR" and length == 13
  (crc,) = struct.unpack(">I", head[29:33])
  assert zlib.crc32(head[12:29]) == crc
  return struct.unpack(">II", head[16:24])


def test_plot_search_writes_valid_pngs(tmp_path):
  genotype = get_genotype("DARTS_V2")
  history = fake_history(genotype=genotype, eigen=True)
  paths = plots.plot_search(history, genotype, OPS, tmp_path / "plots")
  names = [p.rsplit("/", 1)[-1] for p in paths]
  assert names == ["alphas_normal.png", "alphas_reduce.png", "cell_normal.png", "cell_reduce.png",
                   "eigenvalue.png"]
  for path in paths:
    width, height = png_size(path)
    assert 300 <= width <= 3000 and 200 <= height <= 2000, (path, width, height)
    # A blank canvas compresses to a few kB; drawn lines, text and patches do not.
    assert (tmp_path / "plots" / path.rsplit("/", 1)[-1]).stat().st_size > 10_000


SMALL = Genotype.from_string(
    "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_3x3', 2), ('sep_conv_5x5', 0)], "
    "normal_concat=[2, 3], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('avg_pool_3x3', 1)], reduce_concat=[2, 3])")


def test_plot_search_without_eigenvalues_writes_four_files(tmp_path):
  # A 2-node search (5 edges per cell) with a single epoch: markers instead of lines.
  paths = plots.plot_search(fake_history(epochs=1, num_edges=5), SMALL, OPS, tmp_path)
  assert sorted(p.rsplit("/", 1)[-1] for p in paths) == ["alphas_normal.png", "alphas_reduce.png",
                                                         "cell_normal.png", "cell_reduce.png"]
  assert not (tmp_path / "eigenvalue.png").exists()


def test_alpha_figure_plots_the_history_values():
  history = fake_history(epochs=5, seed=3)
  fig = plots.alpha_figure(history, OPS, cells=("reduce",))
  axes = list(fig.axes)
  assert len(axes) == 14
  # Edge order is DARTS': destination node, then source; subplot title names (source -> node).
  titles = [ax.get_title().split("\n")[0] for ax in axes]
  assert titles[:5] == ["$c_{k-2}$ → 0", "$c_{k-1}$ → 0", "$c_{k-2}$ → 1", "$c_{k-1}$ → 1", "0 → 1"]
  assert titles[-1] == "2 → 3"
  by_title = dict(zip(titles, axes))
  # Edge 4 is 0 -> 1; op 3 is skip_connect.
  line = [ln for ln in by_title["0 → 1"].get_lines() if ln.get_label() == "skip_connect"][0]
  np.testing.assert_allclose(line.get_xdata(), [1, 2, 3, 4, 5])
  np.testing.assert_allclose(line.get_ydata(), [r["alphas"]["reduce"][4][3] for r in history])
  legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
  assert legend_labels == list(OPS)


def test_alpha_figure_marks_the_edges_the_genotype_keeps():
  genotype = SMALL
  history = fake_history(epochs=2, num_edges=5, genotype=genotype)
  fig = plots.alpha_figure(history, OPS, cells=("normal",))
  titles = {ax.get_title() for ax in fig.axes}
  assert titles == {"$c_{k-2}$ → 0\nsep_conv_3x3", "$c_{k-1}$ → 0\nskip_connect", "$c_{k-2}$ → 1\nsep_conv_5x5",
                    "$c_{k-1}$ → 1", "0 → 1\ndil_conv_3x3"}
  # The genotype a search returns wins over the last record's (an anti-collapse stop keeps an older cell).
  kept = Genotype(normal=[("avg_pool_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1), ("dil_conv_5x5", 2)],
                  normal_concat=[2, 3], reduce=genotype.reduce, reduce_concat=[2, 3])
  fig = plots.alpha_figure(history, OPS, cells=("normal",), genotype=kept)
  titles = {ax.get_title() for ax in fig.axes}
  assert titles == {"$c_{k-2}$ → 0\nskip_connect", "$c_{k-1}$ → 0\navg_pool_3x3", "$c_{k-2}$ → 1",
                    "$c_{k-1}$ → 1\nsep_conv_3x3", "0 → 1\ndil_conv_5x5"}


def test_cell_graph_layers_by_hand():
  # DARTS_V2 normal: nodes 0, 1, 2 read only the cell inputs; node 3 reads c_{k-2} and node 0.
  graph = plots.cell_graph(get_genotype("DARTS_V2"), "normal")
  assert graph["layer"] == {0: 0, 1: 0, 2: 1, 3: 1, 4: 1, 5: 2, "out": 3}
  ops = [(s, d, op) for s, d, op in graph["edges"] if op is not None]
  assert ops[-2:] == [(0, 5, "skip_connect"), (2, 5, "dil_conv_3x3")]
  assert [(s, d) for s, d, op in graph["edges"] if op is None] == [(2, "out"), (3, "out"), (4, "out"),
                                                                    (5, "out")]


@pytest.mark.parametrize("name", ["DARTS_V1", "DARTS_V2", "NASNet", "AmoebaNet", "ENAS"])
@pytest.mark.parametrize("cell", ["normal", "reduce"])
def test_cell_graph_is_layered_and_flows_left_to_right(name, cell):
  genotype = get_genotype(name)
  graph = plots.cell_graph(genotype, cell)
  layer, pos = graph["layer"], graph["pos"]
  entries = genotype.normal if cell == "normal" else genotype.reduce
  assert len([e for e in graph["edges"] if e[2] is not None]) == len(entries)
  for src, dst, _ in graph["edges"]:
    assert layer[src] < layer[dst]
    assert pos[src][0] < pos[dst][0]
  assert layer["out"] == max(layer.values())
  # No two nodes share a position.
  assert len(set(pos.values())) == len(pos)


def test_cell_figure_labels_every_op_edge():
  genotype = get_genotype("NASNet")
  fig = plots.cell_figure(genotype, "reduce")
  texts = [t.get_text() for t in fig.axes[0].texts]
  for op in {op for op, _ in genotype.reduce}:
    assert texts.count(op) == sum(1 for o, _ in genotype.reduce if o == op)
  assert {"$c_{k-2}$", "$c_{k-1}$", "$c_{k}$", "0", "4"} <= set(texts)


def test_plot_cell_accepts_the_string_notation(tmp_path):
  text = get_genotype("DARTS_V1").to_string()
  path = plots.plot_cell(text, "reduce", tmp_path / "deep" / "cell.png")
  assert png_size(path)[0] > 300


def test_op_colors_are_stable_and_distinct():
  colors = [plots.op_color(op) for op in OPS]
  assert len(set(colors)) == len(OPS)
  assert plots.op_color("my_new_op") == plots.op_color("my_new_op") != plots.op_color("other_op")


@pytest.mark.parametrize("history, message", [
    ([], "empty"),
    ({"alphas": {}}, "list of per-epoch records"),
    ([{"epoch": 1, "train_loss": 1.0}], "no 'alphas'"),
    ([{"epoch": 1, "alphas": {"normal": np.full((14, 8), 1 / 8).tolist()}}], "lacks the 'reduce'"),
    ([{"epoch": 1, "alphas": {"normal": np.full((14, 7), 1 / 7).tolist(),
                              "reduce": np.full((14, 7), 1 / 7).tolist()}}], "expected [edges, 8]"),
    ([{"epoch": 1, "alphas": {"normal": np.full((13, 8), 1 / 8).tolist(),
                              "reduce": np.full((13, 8), 1 / 8).tolist()}}], "not a cell's edge count"),
    ([{"epoch": 1, "alphas": {"normal": np.zeros((14, 8)).tolist(),
                              "reduce": np.zeros((14, 8)).tolist()}}], "not probabilities"),
    ([{"epoch": 1, "alphas": {"normal": [[0.5] * 8] * 2 + [[1 / 8] * 8] * 12,
                              "reduce": np.full((14, 8), 1 / 8).tolist()}}], "not probabilities"),
    ([{"epoch": 2, "alphas": {c: np.full((14, 8), 1 / 8).tolist() for c in ("normal", "reduce")}},
      {"epoch": 1, "alphas": {c: np.full((14, 8), 1 / 8).tolist() for c in ("normal", "reduce")}}],
     "epochs must increase"),
    ([{"epoch": 1, "alphas": {c: np.full((14, 8), 1 / 8).tolist() for c in ("normal", "reduce")}},
      {"epoch": 2, "alphas": {c: np.full((9, 8), 1 / 8).tolist() for c in ("normal", "reduce")}}],
     "but history[0] has"),
    ([{"epoch": 1, "alphas": {"normal": [[1.0] * 8, [1.0]], "reduce": []}}], "rectangular"),
    ([{"epoch": 1, "alphas": {c: np.full((14, 8), np.nan).tolist() for c in ("normal", "reduce")}}],
     "non-finite"),
])
def test_bad_histories_are_refused(tmp_path, history, message):
  with pytest.raises(NasjaxError, match=message.replace("[", r"\[").replace("]", r"\]")):
    plots.plot_alpha_trajectories(history, OPS, tmp_path / "a.png")
  assert not (tmp_path / "a.png").exists()


def test_bad_ops_cells_and_paths_are_refused(tmp_path):
  history = fake_history(epochs=1)
  with pytest.raises(NasjaxError, match="repeat"):
    plots.plot_alpha_trajectories(history, OPS[:-1] + ("none",), tmp_path / "a.png")
  with pytest.raises(NasjaxError, match="op names"):
    plots.plot_alpha_trajectories(history, "none", tmp_path / "a.png")
  with pytest.raises(NasjaxError, match="cells must be"):
    plots.plot_alpha_trajectories(history, OPS, tmp_path / "a.png", cells=("normal", "reduction"))
  with pytest.raises(NasjaxError, match="must end in"):
    plots.plot_alpha_trajectories(history, OPS, tmp_path / "a.gif")
  with pytest.raises(NasjaxError, match="cell must be one of"):
    plots.plot_cell(get_genotype("DARTS_V2"), "reduction", tmp_path / "c.png")


def test_bad_genotypes_are_refused(tmp_path):
  with pytest.raises(NasjaxError, match="expected format"):
    plots.plot_cell("Genotype(normal=[('sep_conv_3x3', 0)]", "normal", tmp_path / "c.png")
  with pytest.raises(NasjaxError, match="Genotype"):
    plots.plot_cell(42, "normal", tmp_path / "c.png")
  # Node 0 cannot read node 0 (genotype index 2): only the cell inputs exist before it.
  forward = Genotype(normal=[("sep_conv_3x3", 2), ("skip_connect", 1)], normal_concat=[2],
                     reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)], reduce_concat=[2])
  with pytest.raises(NasjaxError, match="takes input 2"):
    plots.plot_cell(forward, "normal", tmp_path / "c.png")
  dangling = Genotype(normal=[("sep_conv_3x3", 0), ("skip_connect", 1)], normal_concat=[3],
                      reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)], reduce_concat=[2])
  with pytest.raises(NasjaxError, match="names node 3"):
    plots.plot_cell(dangling, "normal", tmp_path / "c.png")
  # A 4-node genotype does not belong to a 2-node search; nothing is written.
  with pytest.raises(NasjaxError, match="intermediate nodes"):
    plots.plot_search(fake_history(epochs=2, num_edges=5), get_genotype("DARTS_V2"), OPS, tmp_path / "out")
  assert not (tmp_path / "out").exists()
  with pytest.raises(NasjaxError, match="the genotype has 4 intermediate nodes"):
    plots.plot_alpha_trajectories(fake_history(epochs=1, num_edges=5), OPS, tmp_path / "a.png",
                                  genotype=get_genotype("DARTS_V2"))
  with pytest.raises(NasjaxError, match="last record's genotype has 4"):
    plots.plot_alpha_trajectories(fake_history(epochs=1, num_edges=5, genotype=get_genotype("DARTS_V2")), OPS,
                                  tmp_path / "a.png")


def test_eigenvalue_needs_values():
  with pytest.raises(NasjaxError, match="eigen_every"):
    plots.eigenvalue_figure(fake_history(epochs=2))
  history = fake_history(epochs=3, eigen=True)
  history[-1]["stopped"] = "eigenvalue grew"
  fig = plots.eigenvalue_figure(history)
  (line,) = fig.axes[0].get_lines()[:1]
  np.testing.assert_allclose(line.get_ydata(), [0.1, 0.15, 0.2])
  assert any("stopped at epoch 3" in t.get_text() for t in fig.axes[0].texts)


def test_same_input_same_bytes(tmp_path):
  a = plots.plot_cell(get_genotype("ENAS"), "reduce", tmp_path / "a.png")
  b = plots.plot_cell(get_genotype("ENAS"), "reduce", tmp_path / "b.png")
  with open(a, "rb") as fa, open(b, "rb") as fb:
    assert fa.read() == fb.read()


# --------------------------------------------------------------------------------------------------
# benchmarks/darts_fashion_mnist.py: its command line, and (slow) one tiny end-to-end run


def test_benchmark_options_scale_the_paper_configs():
  bench = load_benchmark("darts_fashion_mnist")
  args = bench.parse_args(["--search-epochs", "3", "--search-channels", "4", "--search-layers", "3",
                           "--search-subset", "400", "--train-epochs", "2", "--train-channels", "8",
                           "--train-layers", "5", "--train-subset", "2000", "--batch-size", "32",
                           "--seed", "5", "--methods", "spos,random"])
  assert args.methods == ("spos", "random")
  search = bench.search_cfg("darts", args)
  assert (search.method, search.order, search.epochs, search.channels, search.layers, search.train_subset,
          search.batch_size, search.seed) == ("darts", 1, 3, 4, 3, 400, 32, 5)
  # What the options leave alone is the paper's setting.
  assert search.learning_rate == 0.025 and search.arch_learning_rate == 3e-4 and search.valid_fraction == 0.5
  retrain = bench.retrain_cfg(args)
  assert (retrain.epochs, retrain.channels, retrain.layers, retrain.train_subset, retrain.batch_size,
          retrain.seed) == (2, 8, 5, 2000, 32, 5)
  assert retrain.drop_path == 0.2 and retrain.auxiliary and retrain.weight_decay == 3e-4
  assert search.arch_warmup_epochs == 0
  args = bench.parse_args(["--search-epochs", "3", "--search-warmup-epochs", "1", "--drop-path", "0"])
  assert bench.search_cfg("darts", args).arch_warmup_epochs == 1 and bench.retrain_cfg(args).drop_path == 0.0
  # SPOS runs --search-epochs unless told otherwise, and never DARTS' warm-up (it has no architecture step).
  assert bench.search_cfg("spos", args).epochs == 3 and bench.search_cfg("spos", args).arch_warmup_epochs == 0
  args = bench.parse_args(["--search-epochs", "3", "--spos-search-epochs", "40"])
  assert bench.search_cfg("spos", args).epochs == 40 and bench.search_cfg("darts", args).epochs == 3
  # The size-matched random cell needs the DARTS cell's size: from this run, or given.
  assert bench.parse_args(["--methods", "random_matched", "--match-params", "88000"]).match_params == 88000


@pytest.mark.parametrize("argv, message", [
    (["--methods", "darts,enas"], "--methods"),
    (["--methods", "darts,darts"], "--methods"),
    (["--methods", ""], "--methods"),
    (["--search-epochs", "0"], "--search-epochs"),
    (["--spos-search-epochs", "0"], "--spos-search-epochs"),
    (["--train-subset", "-1"], "--train-subset"),
    (["--search-subset", "50", "--batch-size", "32"], "at least twice the batch size"),
    (["--search-epochs", "2", "--search-warmup-epochs", "2"], "leaves no epoch"),
    (["--drop-path", "1.0"], "--drop-path"),
    (["--methods", "random_matched"], "list darts before it"),
    (["--methods", "random_matched,darts"], "list darts before it"),
    (["--methods", "random_matched", "--match-params", "0"], "--match-params"),
])
def test_benchmark_rejects_bad_options(argv, message):
  bench = load_benchmark("darts_fashion_mnist")
  with pytest.raises(NasjaxError, match=message):
    bench.parse_args(argv)


def test_benchmark_matched_random_cell_is_the_random_cell_at_the_target_size(embedded_dataset):
  from nasjax import spaces
  bench = load_benchmark("darts_fashion_mnist")
  args = bench.parse_args(["--methods", "random_matched", "--match-params", "1", "--train-channels", "4",
                           "--train-layers", "3", "--seed", "3"])
  dataset = embedded_dataset
  genotype = bench.random_stage(args, spaces.get_space("darts"))["genotype"]
  # A target between the sizes at 6 and 8 channels: the closer width wins.
  at6, at8 = (bench.retrained_params(genotype, c, args, dataset) for c in (6, 8))
  assert at6 < at8
  found = bench.matched_width(genotype, args, dataset, at6 + (at8 - at6) // 3)
  assert found == {"channels": 6, "matched_params": at6, "target_params": at6 + (at8 - at6) // 3}
  assert bench.matched_width(genotype, args, dataset, at8)["channels"] == 8
  # A size out of reach of every width tried is refused, not matched to the edge of the range.
  with pytest.raises(NasjaxError, match="no width"):
    bench.matched_width(genotype, args, dataset, 10 * bench.retrained_params(genotype, 16, args, dataset))


@pytest.mark.slow
def test_benchmark_random_cell_end_to_end_and_resume(tmp_path, capsys):
  import json
  bench = load_benchmark("darts_fashion_mnist")
  argv = ["--data", "embedded", "--methods", "random", "--train-epochs", "1", "--train-channels", "4",
          "--train-layers", "3", "--train-subset", "128", "--batch-size", "32", "--quiet",
          "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")]
  assert bench.main(argv) == 0
  first = json.loads((tmp_path / "r.json").read_text())
  entry = first["methods"]["random"]
  assert 0.0 <= entry["test_accuracy"] <= 1.0 and entry["params"] > 0
  assert Genotype.from_string(entry["genotype"]).num_nodes == 4
  assert entry["test_accuracy_per_epoch"] == [entry["test_accuracy"]] and len(entry["seconds_per_epoch"]) == 1
  assert entry["search_plus_retrain_seconds"] == entry["search_seconds"] + entry["retrain_seconds"]
  # A rerun reuses the finished stage: same numbers, no new training.
  assert bench.main(argv) == 0
  second = json.loads((tmp_path / "r.json").read_text())
  assert second["methods"] == first["methods"]
