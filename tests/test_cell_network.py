"""SharedCellNetwork: ENAS's node-based shared cells, exact for every architecture of a cell space."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasjax import spaces
from nasjax.errors import NasjaxError
from nasjax.nn.cell_network import SharedCellNetwork, concat_mask, edge_supernet_is_exact
from nasjax.nn.init import init_variables
from nasjax.nn.network import Network
from nasjax.nn.ops import OpConfig, make_op
from nasjax.nn.supernet import reduction_layers

pytestmark = pytest.mark.usefixtures("fastest_compiles")

CHANNELS, LAYERS, CLASSES = 4, 3, 3
X = jax.random.normal(jax.random.key(5), (4, 8, 8, 1))
Y = jnp.array([0, 1, 2, 1])


def enas_arch(normal, reduce):
  """An enas_micro encoding from per-node rows [input_a, op_a, input_b, op_b] (ops: skip_connect,
  sep_conv_3x3, sep_conv_5x5, avg_pool_3x3, max_pool_3x3)."""
  return jnp.asarray(np.concatenate([np.ravel(normal), np.ravel(reduce)]), jnp.int32)


# Node 0 reads input 1 twice (sep 3x3 and sep 5x5); node 2 reads node 0 twice; nodes 3 and 4 are the loose ends
# of the normal cell. The reduction cell reads cell inputs from nodes 0, 2 and 4 (strided ops) and nodes elsewhere.
REPEAT_ARCH = enas_arch([[1, 1, 1, 2], [0, 3, 2, 0], [2, 4, 2, 1], [1, 0, 4, 2], [0, 2, 3, 3]],
                        [[0, 2, 1, 0], [2, 1, 2, 4], [1, 3, 3, 1], [4, 2, 3, 0], [5, 1, 0, 1]])


@pytest.fixture(scope="module")
def enas():
  """The enas_micro network, its variables and one jitted training step's loss and gradients, compiled once
  for every test of this module."""
  space = spaces.get_space("enas_micro")
  net = SharedCellNetwork.for_space(space, channels=CHANNELS, layers=LAYERS, num_classes=CLASSES)
  variables = init_variables(net, jax.random.key(0), X[:2], space.sample(jax.random.key(1)), train=True)
  traces = []

  def loss_fn(params, batch_stats, arch):
    logits, updates = net.apply({"params": params, "batch_stats": batch_stats}, X, arch, train=True,
                                mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean(), updates["batch_stats"]

  def step(variables, arch):
    traces.append(1)  # runs once per trace, never when a compiled program is reused
    return jax.value_and_grad(loss_fn, has_aux=True)(variables["params"], variables["batch_stats"], arch)

  return space, net, variables, jax.jit(step), traces


def test_edge_supernet_is_exact_for_darts_only():
  assert edge_supernet_is_exact(spaces.get_space("darts"))
  assert not edge_supernet_is_exact(spaces.get_space("nasnet"))
  assert not edge_supernet_is_exact(spaces.get_space("enas_micro"))


def test_one_compiled_program_for_every_architecture(enas):
  space, _, variables, step, traces = enas
  archs = [space.sample(k) for k in jax.random.split(jax.random.key(7), 3)] + [REPEAT_ARCH]
  losses = [float(step(variables, a)[0][0]) for a in archs]
  assert len(traces) == 1
  assert len(set(losses)) == len(archs)  # the architecture is data, and it changes the function


def _slot_grads(grads, cell: int, stack: str, edge: int, candidate: int) -> float:
  tree = grads[f"cell_{cell}"][stack]["edges"].get(f"candidates_{candidate}", {})
  return sum(float(jnp.abs(leaf[edge]).sum()) for leaf in jax.tree.leaves(tree))


def _chosen_slots(arch, num_nodes: int, reductions) -> set:
  """(cell, stack, edge, candidate) of every op the architecture computes; candidates count 'none' as 0."""
  cells = np.asarray(arch).reshape(2, num_nodes, 4)
  out = set()
  for cell in range(LAYERS):
    reduce = cell in reductions
    for node, (ia, oa, ib, ob) in enumerate(cells[int(reduce)]):
      for slot, (source, op) in enumerate(((ia, oa), (ib, ob))):
        edge = 2 * node + slot
        if not reduce:
          out.add((cell, "slots", edge, op + 1))
        elif source < 2:
          out.add((cell, "input_slots", edge, op + 1))
        else:
          out.add((cell, "node_slots", edge - 2, op + 1))
  return out


def test_gradient_is_zero_exactly_outside_the_chosen_ops(enas):
  space, net, variables, step, _ = enas
  (_, _), grads = step(variables, REPEAT_ARCH)
  reductions = reduction_layers(LAYERS)
  chosen = _chosen_slots(REPEAT_ARCH, space.num_nodes, reductions)
  parametric = {k for k, name in enumerate(net.ops, start=1) if name.startswith(("sep_conv", "skip"))}
  checked = 0
  for cell in range(LAYERS):
    stacks = ("input_slots", "node_slots") if cell in reductions else ("slots",)
    for stack in stacks:
      num_edges = 2 * space.num_nodes - (2 if stack == "node_slots" else 0)
      for edge in range(num_edges):
        for candidate in range(1, len(net.ops) + 1):
          g = _slot_grads(grads, cell, stack, edge, candidate)
          if (cell, stack, edge, candidate) not in chosen:
            assert g == 0.0, (cell, stack, edge, net.ops[candidate - 1])
            checked += 1
          elif candidate in parametric and not (stack != "input_slots" and candidate == 1):
            # Chosen ops with parameters learn (a stride-1 skip_connect is the identity: no parameters).
            assert g > 0.0, (cell, stack, edge, net.ops[candidate - 1])
  assert checked > 100


def test_a_node_reading_one_input_twice_applies_both_ops(enas):
  space, _, variables, step, _ = enas
  (_, _), grads = step(variables, REPEAT_ARCH)
  # Normal cell 0, node 0 reads input 1 with sep_conv_3x3 (slot a, candidate 2) and sep_conv_5x5 (slot b,
  # candidate 3): both learn. The edge supernet's view of the same architecture keeps only op_b there.
  assert _slot_grads(grads, 0, "slots", 0, 2) > 0 and _slot_grads(grads, 0, "slots", 1, 3) > 0
  edge_view = np.asarray(space.edge_ops(REPEAT_ARCH))[0]
  assert edge_view[1] == 3 and edge_view[0] == 0  # one op (sep_conv_5x5 + 1) on edge 1 -> node 0, input 0 unused


def test_cell_output_is_the_loose_ends_or_all_nodes(enas):
  space, _, variables, step, _ = enas
  mask = np.asarray(concat_mask(jnp.asarray(REPEAT_ARCH).reshape(2, 5, 4)[0], 5, "loose_ends"))
  np.testing.assert_array_equal(mask, np.asarray(space.concat_mask(REPEAT_ARCH))[0])
  np.testing.assert_array_equal(mask, [False, False, False, True, True])
  assert bool(concat_mask(jnp.zeros((5, 4), jnp.int32), 5, "all").all())
  # Cell 0's output feeds cell 1's preprocess1 (a 1x1 convolution): the rows of nodes outside the
  # concatenation get no gradient with loose ends, all of them with concat "all".
  (_, _), grads = step(variables, REPEAT_ARCH)
  kernel = np.asarray(grads["cell_1"]["preprocess1"]["Pointwise_0"]["kernel"])  # [5 * C, C]
  row_norms = np.abs(kernel).reshape(5, CHANNELS, -1).sum(axis=(1, 2))
  assert (row_norms[~mask] == 0).all() and (row_norms[mask] > 0).all()
  # Concat "all" (DARTS): test_computes_the_genotype_network_for_a_fixed_architecture[darts].


def test_jit_equals_no_jit(enas):
  _, net, variables, _, _ = enas
  eager = net.apply(variables, X, REPEAT_ARCH, train=False)
  jitted = jax.jit(lambda v, a: net.apply(v, X, a, train=False))(variables, REPEAT_ARCH)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)


def test_bad_architectures_are_refused_in_one_line(enas):
  _, net, variables, _, _ = enas
  for bad, says in ((jnp.zeros((39,), jnp.int32), "int32[40]"), (jnp.zeros((2, 20), jnp.int32), "int32[40]"),
                    (jnp.zeros((40,), jnp.float32), "int32[40]"),
                    (REPEAT_ARCH.at[4].set(3), "node 1 is"), (REPEAT_ARCH.at[1].set(5), "ops are 0..4")):
    with pytest.raises(NasjaxError, match=says.replace("[", r"\[").replace(".", r"\.")):
      net.apply(variables, X, bad, train=False)
  with pytest.raises(NasjaxError, match="needs a cell space"):
    SharedCellNetwork.for_space(spaces.get_space("nb201"))


# ------------------------------------------------------------------------------------ the genotype's Network
def _op_module_name(op: str, stride: int, counters: dict) -> str:
  """The auto-name Network's cell gives the op module it builds next (Flax counts per class)."""
  cls = type(make_op(op, OpConfig(CHANNELS, stride))).__name__
  counters[cls] = counters.get(cls, -1) + 1
  return f"{cls}_{counters[cls]}"


def _shared_from_network(space, arch, network_vars, shared_vars):
  """The shared network's variables that compute the same function as the genotype's Network: every chosen
  op's variables copied into its slot; the rows of 1x1 kernels that read a cell output spread over the
  positions of the concatenated nodes (the other rows read zeros)."""
  cells = np.asarray(arch).reshape(2, space.num_nodes, 4)
  concat = space.concat(arch)
  reductions = reduction_layers(LAYERS)
  out = jax.tree.map(lambda a: a, shared_vars)

  def spread_rows(target, source, producer):
    nodes = concat[int(producer in reductions)]
    width = source.shape[0] // len(nodes)
    for j, k in enumerate(nodes):
      target = target.at[(k - 2) * width:(k - 1) * width].set(source[j * width:(j + 1) * width])
    return target

  for collection in ("params", "batch_stats"):
    net_tree, tree = network_vars[collection], out[collection]
    for cell in range(LAYERS):
      reduce = cell in reductions
      counters: dict = {}
      for node, (ia, oa, ib, ob) in enumerate(cells[int(reduce)]):
        for slot, (source, op) in enumerate(((ia, oa), (ib, ob))):
          stride = 2 if reduce and source < 2 else 1
          name = _op_module_name(space.ops[op], stride, counters)
          if name not in net_tree[f"cell_{cell}"]:
            continue  # a parameter-free op
          edge = 2 * node + slot
          stack = "slots" if not reduce else ("input_slots" if source < 2 else "node_slots")
          edge -= 2 if stack == "node_slots" else 0
          slot_tree = tree[f"cell_{cell}"][stack]["edges"][f"candidates_{op + 1}"]
          (inner,) = slot_tree.keys()
          slot_tree[inner] = jax.tree.map(lambda s, n: s.at[edge].set(n), slot_tree[inner],
                                          net_tree[f"cell_{cell}"][name])
      for pre, producer in (("preprocess0", cell - 2), ("preprocess1", cell - 1)):
        for path, leaf in jax.tree_util.tree_leaves_with_path(net_tree[f"cell_{cell}"][pre]):
          keys = [p.key for p in path]
          parent = tree[f"cell_{cell}"][pre]
          for k in keys[:-1]:
            parent = parent[k]
          same = parent[keys[-1]].shape == leaf.shape
          parent[keys[-1]] = leaf if same else spread_rows(parent[keys[-1]], leaf, producer)
    for name in ("stem_conv", "stem_bn"):
      if name in net_tree:
        tree[name] = net_tree[name]
    if collection == "params":
      tree["classifier"] = {"bias": net_tree["classifier"]["bias"],
                            "kernel": spread_rows(tree["classifier"]["kernel"], net_tree["classifier"]["kernel"],
                                                  LAYERS - 1)}
  return out


@pytest.mark.parametrize("space_name,arch", [("darts", None), ("enas_micro", REPEAT_ARCH)])
def test_computes_the_genotype_network_for_a_fixed_architecture(space_name, arch):
  """DARTS with distinct inputs and all nodes concatenated; ENAS micro with repeated inputs and loose ends:
  with the Network's weights in the chosen slots the outputs agree, and another architecture differs."""
  space = spaces.get_space(space_name)
  arch = space.sample(jax.random.key(11)) if arch is None else arch
  network = Network(space.decode(np.asarray(arch)), CHANNELS, LAYERS, CLASSES)
  net_vars = init_variables(network, {"params": jax.random.key(2), "dropout": jax.random.key(2)}, X[:2])
  shared = SharedCellNetwork.for_space(space, channels=CHANNELS, layers=LAYERS, num_classes=CLASSES)
  shared_vars = _shared_from_network(space, arch, net_vars,
                                     init_variables(shared, jax.random.key(3), X[:2], arch, train=True))

  @jax.jit
  def both(net_vars, shared_vars, arch):
    # Training mode: every BatchNorm normalises with its batch's statistics, which a wrong path would change.
    (logits_net, _), _ = network.apply(net_vars, X, train=True, rngs={"dropout": jax.random.key(0)},
                                       mutable=["batch_stats"])
    logits_shared, _ = shared.apply(shared_vars, X, arch, train=True, mutable=["batch_stats"])
    return logits_net, logits_shared

  logits_net, logits_shared = both(net_vars, shared_vars, arch)
  np.testing.assert_allclose(np.asarray(logits_shared), np.asarray(logits_net), rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(logits_net).max()) > 1e-3  # not two zero outputs
  other = space.sample(jax.random.key(12))
  assert not np.allclose(np.asarray(both(net_vars, shared_vars, other)[1]), np.asarray(logits_net), atol=1e-3)


# ------------------------------------------------------------------------------------ where it is used
# Two nodes, inputs may repeat, loose ends: what the edge supernet cannot express, small enough to train here.
TINY_LOOSE = spaces.CellSpace("tiny_loose", ("skip_connect", "conv_1x1"), 2, False, "loose_ends")


def test_short_training_uses_it_and_spos_where_the_edge_supernet_is_inexact(tiny_dataset):
  from nasjax import oneshot
  from nasjax.estimators.train import ShortTrainingEstimator, short_training_config
  from nasjax.nn.supernet import Supernet
  from nasjax.oneshot.search import Search
  enas_micro, darts = spaces.get_space("enas_micro"), spaces.get_space("darts")
  key = jax.random.key(4)
  for space, network in ((enas_micro, SharedCellNetwork), (darts, Supernet)):
    cfg = oneshot.demo_search_config("spos")
    search = Search(cfg, space, (8, 8, 1), 4, (0.4,), (0.2,), steps_per_epoch=2)
    assert type(search.net) is network
    path = search.net_arch(search.weights({}, key, 0))
    expected = space.sample(key) if network is SharedCellNetwork else dict(zip(("normal", "reduce"),
                                                                              space.edge_ops(space.sample(key))))
    jax.tree.map(np.testing.assert_array_equal, path, expected)
    # The short-training estimator's shared model is the node-based network on every cell space, the edge
    # supernet on DARTS when asked for.
    for shared in ("node", "edge") if space is darts else ("node",):
      estimator = ShortTrainingEstimator(space, tiny_dataset, short_training_config(), model="supernet",
                                         shared_network=shared)
      assert type(estimator.net) is (SharedCellNetwork if shared == "node" else Supernet)
      arch = np.asarray(space.sample(key))
      extra = estimator._build(arch).extra
      np.testing.assert_array_equal(extra, arch if shared == "node" else space.edge_ops(arch))
  with pytest.raises(NasjaxError, match="cannot express enas_micro"):
    ShortTrainingEstimator(enas_micro, tiny_dataset, short_training_config(), shared_network="edge")


def test_weight_sharing_estimator_trains_and_scores_the_node_network(tiny_dataset, tmp_path):
  from nasjax.estimators import registry as R
  cfg = R.estimator_config("weight_sharing", TINY_LOOSE, preset="demo")
  cfg.update(epochs=1, batch_size=8, channels=4, layers=2, train_subset=0, eval_batch_size=32, crop_padding=1,
             rank_batches=1)
  est = R.build_estimator("weight_sharing", TINY_LOOSE, tiny_dataset, cfg, workdir=str(tmp_path))
  # Node 0 reads input 1 twice; the same with input 0 and input 1: different cells, different scores.
  archs = np.asarray([[1, 0, 1, 1, 2, 1, 0, 0] * 2, [0, 0, 1, 1, 2, 1, 0, 0] * 2], np.int32)
  assert est.jittable
  vmapped = jax.vmap(est, in_axes=(0, None))(jnp.asarray(archs), jax.random.key(0))["loss"]
  serial = [float(est(a, jax.random.key(0))["loss"]) for a in archs]
  np.testing.assert_allclose(np.asarray(vmapped), serial, rtol=1e-5)
  assert serial[0] != serial[1]
