"""Op registry, the supernet and discrete networks (tiny sizes so CI stays fast)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import NasjaxError
from nasjax.nn import ops
from nasjax.nn.count import count_macs, count_params
from nasjax.nn.network import Network
from nasjax.nn.supernet import DARTS_SUPERNET_OPS, Supernet, cell_pairs, num_edges
from nasjax.spaces import darts_space, get_genotype

E, O = 14, len(DARTS_SUPERNET_OPS)
# Values and shapes are under test, not speed: XLA's optimisation passes (most of these tests' compile
# time on a CPU) are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_depthwise_formulations_agree(k, dilation, stride):
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 6))
  w = jax.random.normal(jax.random.key(1), (k, k, 1, 6))
  ref = ops.depthwise_conv(x, w, stride, dilation, "grouped")
  for impl in ("dense", "shift"):
    np.testing.assert_allclose(ops.depthwise_conv(x, w, stride, dilation, impl), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dilation", [1, 2])
def test_shifted_depthwise_gradient_outside_scans_equals_grouped(dilation):
  # GPUs run the shifted slices with plain autodiff (conv_impl "xla"): same gradients as the grouped form.
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  w = jax.random.normal(jax.random.key(1), (3, 3, 1, 4))
  loss = lambda impl: lambda x, w: jnp.sum(jnp.sin(ops.depthwise_conv(x, w, 1, dilation, impl)))  # noqa: E731
  want = jax.grad(loss("grouped"), (0, 1))(x, w)
  got = jax.grad(loss("shift"), (0, 1))(x, w)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_depthwise_auto_choice_per_backend():
  assert ops.resolve_dw_impl("auto", 16, "gpu") == "shift"
  assert ops.resolve_dw_impl("auto", 16, "tpu") == "grouped"
  assert ops.resolve_dw_impl("auto", 16, "cpu", custom_gradient=True) == "shift"
  assert ops.resolve_dw_impl("auto", 16, "cpu") == "dense"
  assert ops.resolve_dw_impl("auto", 64, "cpu") == "shift"
  assert ops.resolve_dw_impl("grouped", 16, "gpu") == "grouped"
  with pytest.raises(NasjaxError, match="accepted"):
    ops.resolve_dw_impl("winograd", 16, "gpu")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("window", [3, 5])
def test_pool_formulations_agree(kind, stride, window):
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  np.testing.assert_allclose(ops.pool(x, kind, window, stride, "shift"),
                             ops.pool(x, kind, window, stride, "window"), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ops.OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_every_registered_op_keeps_channels_and_strides(name, stride):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  module = ops.make_op(name, ops.OpConfig(4, stride, affine=True))
  variables = module.init(jax.random.key(1), x, False)
  y = module.apply(variables, x, False)
  assert y.shape == (2, 8 // stride, 8 // stride, 4)


def test_unknown_op_is_a_clear_error():
  with pytest.raises(NasjaxError, match="unknown op 'sep_conv_9x9'"):
    ops.make_op("sep_conv_9x9", ops.OpConfig(4))


def test_duplicate_registration_is_refused():
  with pytest.raises(ValueError, match="already registered"):
    ops.register_op("skip_connect")(lambda c: None)


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_op_metadata_says_what_the_op_is(name):
  spec = ops.op_spec(name)
  assert spec.name == name and spec.kind in ops.OP_KINDS
  assert spec.is_pool == (spec.kind in ("max_pool", "avg_pool"))
  x = jnp.zeros((1, 8, 8, 4))
  params = jax.eval_shape(lambda k: ops.make_op(name, ops.OpConfig(4)).init(k, x, False),
                          jax.random.key(0)).get("params", {})
  if spec.kind != "other":
    assert spec.parameter_free == (not jax.tree.leaves(params))
  if spec.kind in ("max_pool", "avg_pool", "sep_conv", "dil_conv", "conv", "factorized_conv"):
    assert spec.kernel is not None and f"{spec.kernel}x" in name


def test_op_metadata_of_the_builtin_ops():
  assert [n for n, s in sorted(ops.OPS.items()) if s.is_pool] == [
      "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7"]
  assert ops.OPS["none"].is_zero and ops.OPS["skip_connect"].is_identity
  assert (ops.OPS["dil_conv_5x5"].kernel, ops.OPS["dil_conv_5x5"].dilation) == (5, 2)
  assert ops.OPS["sep_conv_3x3"].dilation == 1 and not ops.OPS["sep_conv_3x3"].parameter_free
  with pytest.raises(NasjaxError, match="unknown op kind 'pooling'"):
    ops.register_op("probe_kind", kind="pooling")
  assert "probe_kind" not in ops.OPS


def test_supernet_tells_ops_apart_by_metadata_not_name():
  # An op whose name contains "pool" but that is no pool gets no BN in a mixed edge; a pool does.
  from nasjax.nn.supernet import Candidate
  if "carpool_probe" not in ops.OPS:
    ops.register_op("carpool_probe")(lambda c: ops.Identity())
  x = jnp.ones((1, 4, 4, 2))
  for name, has_bn in (("carpool_probe", False), ("max_pool_3x3", True), ("skip_connect", False)):
    variables = Candidate(name, ops.OpConfig(2)).init(jax.random.key(0), x, True)
    assert ("batch_stats" in variables) == has_bn, name


def test_impl_is_one_validated_setting():
  assert ops.Impl() == ops.Impl("auto", "auto", "auto")
  assert ops.OpConfig(4).impl == ops.Impl(conv="xla")  # a bare op: XLA's convolutions, as before
  for field, value in (("depthwise", "winograd"), ("conv", "fast"), ("pool", "avg")):
    with pytest.raises(NasjaxError, match=f"unknown {field} implementation {value!r}; accepted: auto"):
      ops.Impl(**{field: value})
  genotype = get_genotype("DARTS_V2")
  assert Network(genotype, 4, 3)._impl() == ops.Impl(conv="canonical" if jax.default_backend() == "cpu"
                                                     else "xla")
  # The deprecated spellings still land in the same setting.
  assert Network(genotype, 4, 3, dw_impl="grouped", conv_impl="xla")._impl() == ops.XLA_IMPL
  assert Network(genotype, 4, 3, impl=ops.XLA_IMPL)._impl() == ops.XLA_IMPL


# A small op set and two nodes keep the supernet tests quick to compile; every code path (parameter-free
# ops with BN, separable and dilated convolutions, none) is still there.
SMALL_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
SMALL_E, SMALL_O = 5, len(SMALL_OPS)


def random_discrete(key):
  return jax.random.randint(key, (2, SMALL_E), 0, SMALL_O)


@pytest.fixture(scope="module")
def tiny_supernet():
  net = Supernet(ops=SMALL_OPS, num_nodes=2, channels=4, layers=3, num_classes=5)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  w = {k: jax.nn.softmax(jnp.zeros((SMALL_E, SMALL_O))) for k in ("normal", "reduce")}
  variables = jax.jit(lambda k: net.init(k, x, w, train=True))(jax.random.key(1))
  return net, x, variables


def test_one_hot_relaxed_equals_discrete(tiny_supernet):
  net, x, variables = tiny_supernet
  arch = random_discrete(jax.random.key(3))
  one_hot = {"normal": jax.nn.one_hot(arch[0], SMALL_O), "reduce": jax.nn.one_hot(arch[1], SMALL_O)}

  @jax.jit
  def run(a):
    train_out = net.apply(variables, x, a, train=True, mutable=["batch_stats"])[0]
    return train_out, net.apply(variables, x, a, train=False)

  for got, want in zip(run(one_hot), run(arch)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_hard_mode_equals_discrete_at_one_hot(tiny_supernet):
  net, x, variables = tiny_supernet
  arch = random_discrete(jax.random.key(4))
  one_hot = {"normal": jax.nn.one_hot(arch[0], SMALL_O), "reduce": jax.nn.one_hot(arch[1], SMALL_O)}
  hard = jax.jit(lambda a: net.apply(variables, x, a, train=False, hard=True))(one_hot)
  want = jax.jit(lambda a: net.apply(variables, x, a, train=False))(arch)
  np.testing.assert_allclose(hard, want, rtol=1e-6, atol=1e-6)


def test_discrete_architectures_do_not_recompile(tiny_supernet):
  net, x, variables = tiny_supernet

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(arch):
    return net.apply(variables, x, arch, train=False)

  for i in range(3):
    forward(random_discrete(jax.random.key(10 + i)))
  chex.clear_trace_counter()


def test_darts_space_architectures_drive_the_darts_supernet():
  space = darts_space()
  net = Supernet.for_space(space, channels=2, layers=1, num_classes=3)
  x = jnp.ones((2, 4, 4, 3))
  arch = space.edge_ops(space.sample(jax.random.key(0)))
  assert arch.shape == (2, E)
  # Shapes only: tracing proves the space's encoding fits the supernet without compiling all 8 ops.
  variables = jax.eval_shape(lambda k: net.init(k, x, arch), jax.random.key(1))
  assert jax.eval_shape(lambda v: net.apply(v, x, arch), variables).shape == (2, 3)


def test_edge_parameters_of_another_supernet_are_refused():
  # Applying checks stacked edge parameters against the shapes recorded at init (Flax's own check would
  # trace every candidate op again): parameters of a supernet with other ops are named in a clear error.
  x = jnp.ones((2, 8, 8, 3))
  w = {k: jax.nn.softmax(jnp.zeros((SMALL_E, SMALL_O))) for k in ("normal", "reduce")}
  other_ops = SMALL_OPS[:3] + ("sep_conv_5x5", "dil_conv_3x3")
  net, other = (Supernet(ops=o, num_nodes=2, channels=4, layers=1, num_classes=3) for o in (SMALL_OPS, other_ops))
  mine, theirs = (jax.eval_shape(lambda k, n=n: n.init(k, x, w, train=True), jax.random.key(0)) for n in (net, other))
  assert jax.eval_shape(lambda v: net.apply(v, x, w), mine).shape == (2, 3)
  with pytest.raises(NasjaxError, match=r"cell_0/all_edges do not fit this supernet: .*candidates_3"):
    jax.eval_shape(lambda v: net.apply(v, x, w), {**mine, "params": theirs["params"]})


def test_partial_channels_shapes():
  net = Supernet(ops=SMALL_OPS, num_nodes=2, channels=8, layers=3, num_classes=3, partial_channels=4)
  x = jnp.ones((2, 8, 8, 3))
  w = {k: jax.nn.softmax(jnp.zeros((SMALL_E, SMALL_O))) for k in ("normal", "reduce")}
  variables = jax.jit(lambda k: net.init(k, x, w, train=True))(jax.random.key(0))
  assert jax.jit(lambda v: net.apply(v, x, w))(variables).shape == (2, 3)
  # Each edge's ops see C/K = 2 of the 8 channels (cell 0, edges leaving the first input).
  sep = variables["params"]["cell_0"]["all_edges"]["edges"]["candidates_3"]
  kernels = [leaf for leaf in jax.tree.leaves(sep) if leaf.ndim == 3]  # pointwise: [edges, C_in, C_out]
  assert kernels and all(k.shape[1:] == (2, 2) for k in kernels)


def test_bad_architecture_shapes_are_clear_errors(tiny_supernet):
  net, x, variables = tiny_supernet
  with pytest.raises(NasjaxError, match="expects"):
    net.apply(variables, x, {"normal": jnp.zeros((SMALL_E, 3)), "reduce": jnp.zeros((SMALL_E, 3))})
  with pytest.raises(NasjaxError, match="lacks"):
    net.apply(variables, x, {"normal": jnp.zeros((SMALL_E, SMALL_O))})


# Paper counts (auxiliary head excluded): DARTS_V2 3.3M in the DARTS paper (3,349,342 printed by its
# code), AmoebaNet-A 3.2M in the DARTS paper's table; the rest pin our own figures as regressions.
@pytest.mark.parametrize("name,expected", [("DARTS_V2", 3_349_342), ("DARTS_V1", 3_169_414),
                                           ("AmoebaNet", 3_145_078), ("NASNet", 3_830_950),
                                           ("ENAS", 4_394_710)])
def test_parameter_counts_of_shipped_genotypes(name, expected):
  net = Network(get_genotype(name), channels=36, layers=20, num_classes=10, auxiliary=True)
  x = jnp.zeros((1, 32, 32, 3))
  shapes = jax.eval_shape(lambda k: net.init({"params": k, "dropout": k}, x), jax.random.key(0))
  assert count_params(shapes["params"]) == expected
  if name == "DARTS_V2":
    assert round(expected / 1e6, 1) == 3.3  # the DARTS paper's figure
  assert count_params(shapes["params"], exclude=()) > expected  # the auxiliary head exists


def test_macs_of_a_single_convolution():
  import flax.linen as nn
  conv = nn.Conv(8, (3, 3), use_bias=False)
  x = jnp.zeros((1, 10, 10, 4))
  v = conv.init(jax.random.key(0), x)
  assert count_macs(conv.apply, v, x) == 10 * 10 * 8 * 3 * 3 * 4


@pytest.mark.parametrize("scan", [False, True])
def test_network_forward_with_aux_and_drop_path(scan):
  # Three cells, the fewest with both reductions: the auxiliary head sits after the second (cell 2). No
  # run of cells is scanned at this depth (nor was at the 6 cells this had); a scanned run is traced in
  # test_scanned_and_unrolled_networks_have_the_same_size.
  net = Network(get_genotype("DARTS_V2"), channels=4, layers=3, num_classes=7, auxiliary=True,
                scan_cells=scan)
  x = jnp.ones((2, 16, 16, 3))
  v = jax.jit(lambda k: net.init({"params": k, "dropout": jax.random.key(1)}, x))(jax.random.key(0))
  (logits, aux), _ = jax.jit(lambda v: net.apply(v, x, train=True, drop_path_prob=0.2,
                                                 rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]))(v)
  assert logits.shape == (2, 7) and aux.shape == (2, 7)
  assert np.all(np.isfinite(logits))


def test_scanned_and_unrolled_networks_have_the_same_size():
  sizes = []
  for scan in (False, True):
    # Ten cells, the fewest with a scanned run (cells 8 and 9; with fewer, scan_cells=True scans nothing).
    net = Network(get_genotype("DARTS_V2"), channels=4, layers=10, num_classes=3, scan_cells=scan)
    shapes = jax.eval_shape(lambda k: net.init({"params": k, "dropout": k}, jnp.zeros((1, 16, 16, 3))),
                            jax.random.key(0))
    sizes.append(count_params(shapes["params"]))
    assert ("cells_8_to_9" in shapes["params"]) == scan
  assert sizes[0] == sizes[1]


def test_darts_v2_imagenet_network_matches_paper():
  # DARTS' ImageNet setting (mobile): 48 channels, 14 cells, 224x224 inputs; the paper reports 4.7M params.
  net = Network(get_genotype("DARTS_V2"), channels=48, layers=14, num_classes=1000, stem="imagenet",
                scan_cells=False)
  shapes = jax.eval_shape(lambda k: net.init({"params": k, "dropout": k}, jnp.zeros((1, 224, 224, 3))),
                          jax.random.key(0))
  assert count_params(shapes["params"]) == 4_718_752


def test_unknown_stem_and_op_in_genotype_are_clear_errors():
  from nasjax.spaces import Genotype
  with pytest.raises(NasjaxError, match="unknown stem"):
    Network(get_genotype("DARTS_V2"), 4, 3, stem="resnet").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  g = Genotype(normal=(("conv_9x9", 0), ("skip_connect", 1)), normal_concat=(2,),
               reduce=(("skip_connect", 0), ("skip_connect", 1)), reduce_concat=(2,))
  with pytest.raises(NasjaxError, match="conv_9x9"):
    Network(g, 4, 3).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


ALL_EDGE_CHECKS = ("grads", "hard", "evaluation", "hvp")


# The default run checks reverse mode with and without recomputed edges; the full matrix (hard samples,
# evaluation mode, DARTS' exact second order) compiles ~3x more. The default run still checks the second
# order through the scanned edges elsewhere: test_oneshot (against float64 finite differences) and
# test_conv (the depthwise kernels' forward-over-reverse).
@pytest.mark.parametrize("checks", [
    pytest.param({"scan": ("grads",), "scan_remat": ("grads",)}, id="gradients"),
    pytest.param({"scan": ALL_EDGE_CHECKS, "scan_remat": ALL_EDGE_CHECKS}, id="all", marks=pytest.mark.slow)])
def test_scanned_edges_equal_unrolled_edges_with_their_gradients(checks):
  """The scan path (canonical convolutions, custom in-place edge gradients, with and without recomputed
  edge activations) against plain autodiff."""
  ops_ = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
  variants = {"scan": dict(edge_loop="scan", remat_edges=False),
              "scan_remat": dict(edge_loop="scan", remat_edges=True), "unroll": dict(edge_loop="unroll")}
  nets = {name: Supernet(ops=ops_, num_nodes=2, channels=4, layers=3, num_classes=3, **kw)
          for name, kw in variants.items()}
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  labels = jnp.array([0, 1, 2, 1])
  alphas = {k: jax.random.normal(jax.random.key(i), (SMALL_E, SMALL_O)) for i, k in enumerate(("normal", "reduce"))}
  variables = jax.jit(lambda k: nets["unroll"].init(k, x, alphas, train=True))(jax.random.key(1))
  # Same variable tree in both layouts: the edge loop is a runtime choice, not a different model.
  assert jax.tree.structure(variables) == jax.tree.structure(jax.eval_shape(
      lambda k: nets["scan"].init(k, x, alphas, train=True), jax.random.key(1)))

  def results(net, names):
    def loss(params, a, hard=False, train=True):
      arch = {k: jax.nn.softmax(t, -1) for k, t in a.items()}
      v = {"params": params, "batch_stats": variables["batch_stats"]}
      if train:
        logits, stats = net.apply(v, x, arch, train=True, hard=hard, mutable=["batch_stats"])
      else:
        logits, stats = net.apply(v, x, arch, train=False), {}
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), stats
    params = variables["params"]
    tangent = jax.tree.map(lambda t: 0.01 * jnp.ones_like(t), params)
    compute = {
        "grads": lambda: jax.grad(loss, (0, 1), has_aux=True)(params, alphas),
        "hard": lambda: jax.grad(lambda p, a: loss(p, a, hard=True)[0], (0, 1))(params, alphas),
        "evaluation": lambda: jax.grad(lambda p, a: loss(p, a, train=False)[0], (0, 1))(params, alphas),
        "hvp": lambda: jax.jvp(lambda p: jax.grad(lambda a: loss(p, a)[0])(alphas), (params,), (tangent,))[1]}
    return {name: compute[name]() for name in names}

  want = jax.jit(lambda: results(nets["unroll"], sorted(set().union(*checks.values()))))()
  for variant, names in checks.items():
    got = jax.jit(lambda: results(nets[variant], names))()
    for name in names:
      for g, w in zip(jax.tree.leaves(got[name]), jax.tree.leaves(want[name])):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{variant} {name}")


def test_cell_pairs_of_the_search_networks():
  assert cell_pairs(8) == (3, 6)  # DARTS search: reductions at 2 and 5
  assert cell_pairs(5) == ()
  assert cell_pairs(7) == (5,)
  assert cell_pairs(20) == (1, 3, 7, 9, 11, 14, 16, 18)


def _pair_layout(collection, pairs):
  """One-cell-per-module variables in the layout of a supernet that scans cell pairs."""
  out = dict(collection)
  for i in pairs:
    first, second = out.pop(f"cell_{i}"), out.pop(f"cell_{i + 1}")
    for j, cell in ((i, first), (i + 1, second)):
      if "preprocess0" in cell:
        out[f"cell_{j}_preprocess0"] = cell["preprocess0"]
    rest = [{k: v for k, v in cell.items() if k != "preprocess0"} for cell in (first, second)]
    out[f"cells_{i}_{i + 1}"] = jax.tree.map(lambda a, b: jnp.stack([a, b]), *rest)
  return out


def _paired_and_separate():
  # Three ops and one node (two edges a cell) keep the two 7-cell supernets quick to compile: the pair is
  # stacked and scanned as whole cells, whatever is inside them. A parameter-free op with BN, a separable
  # convolution (BN statistics, depthwise kernels) and none still cover the pair's variables.
  ops_ = ("none", "avg_pool_3x3", "sep_conv_3x3")
  kw = dict(ops=ops_, num_nodes=1, channels=4, layers=7, num_classes=3)
  paired, separate = Supernet(**kw), Supernet(**kw, scan_cell_pairs=False)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  labels = jnp.array([0, 1, 2, 1])
  alphas = {k: jax.random.normal(jax.random.key(i), (num_edges(1), len(ops_)))
            for i, k in enumerate(("normal", "reduce"))}
  variables = jax.jit(lambda k: separate.init(k, x, alphas, train=True))(jax.random.key(1))
  as_pairs = {name: _pair_layout(c, cell_pairs(7)) for name, c in variables.items()}

  def loss_fn(net, v):
    def loss(params, a):
      arch = {k: jax.nn.softmax(t, -1) for k, t in a.items()}
      logits, stats = net.apply({**v, "params": params}, x, arch, train=True, mutable=["batch_stats"])
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), stats
    return loss

  return paired, separate, variables, as_pairs, loss_fn, x, alphas


def test_scanned_cell_pairs_equal_separate_cells_with_their_gradients():
  """Two normal cells as one scan: same function, BN statistics and gradients as two cells."""
  paired, separate, variables, as_pairs, loss_fn, x, alphas = _paired_and_separate()
  own = jax.eval_shape(lambda k: paired.init(k, x, alphas, train=True), jax.random.key(1))
  chex.assert_trees_all_equal_shapes_and_dtypes(own, as_pairs)

  def results(net, v):
    (value, stats), grads = jax.value_and_grad(loss_fn(net, v), (0, 1), has_aux=True)(v["params"], alphas)
    evaluation = net.apply(v, x, {k: jax.nn.softmax(t, -1) for k, t in alphas.items()}, train=False)
    return value, stats, grads, evaluation

  want_value, want_stats, (want_dp, want_da), want_eval = jax.jit(lambda: results(separate, variables))()
  got_value, got_stats, (got_dp, got_da), got_eval = jax.jit(lambda: results(paired, as_pairs))()
  pairs = cell_pairs(7)
  for g, w in ((got_value, want_value), (got_eval, want_eval), (got_da, want_da),
               (got_dp, _pair_layout(want_dp, pairs)),
               (got_stats["batch_stats"], _pair_layout(want_stats["batch_stats"], pairs))):
    chex.assert_trees_all_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # forward-over-reverse through two 7-cell supernets: ~2 min of compiling on 2 cores
def test_scanned_cell_pairs_keep_the_exact_hessian_products():
  paired, separate, variables, as_pairs, loss_fn, x, alphas = _paired_and_separate()

  def hvp(net, v):
    loss = loss_fn(net, v)
    tangent = jax.tree.map(lambda t: 0.01 * jnp.ones_like(t), v["params"])
    return jax.jvp(lambda p: jax.grad(lambda a: loss(p, a)[0])(alphas), (v["params"],), (tangent,))[1]

  want = jax.jit(lambda: hvp(separate, variables))()
  chex.assert_trees_all_close(jax.jit(lambda: hvp(paired, as_pairs))(), want, rtol=1e-4, atol=1e-5)


def test_unrolled_supernet_supports_pure_forward_mode(tiny_supernet):
  net, x, variables = tiny_supernet
  net = net.clone(edge_loop="unroll")
  w = {k: jax.nn.softmax(jnp.zeros((SMALL_E, SMALL_O))) for k in ("normal", "reduce")}
  tangent = jax.tree.map(jnp.ones_like, variables["params"])
  # Jitted (one program; eagerly each op compiled on its own): forward mode is traced either way.
  out, dout = jax.jit(lambda p, t: jax.jvp(lambda p: net.apply({**variables, "params": p}, x, w), (p,), (t,)))(
      variables["params"], tangent)
  assert out.shape == dout.shape == (4, 5) and np.isfinite(np.asarray(dout)).all()


def test_unknown_edge_loop_is_a_clear_error():
  net = Supernet(ops=SMALL_OPS, num_nodes=2, channels=4, layers=1, num_classes=3, edge_loop="vmap")
  w = {k: jnp.zeros((SMALL_E, SMALL_O)) for k in ("normal", "reduce")}
  with pytest.raises(NasjaxError, match="unknown edge loop 'vmap'"):
    net.init(jax.random.key(0), jnp.ones((1, 4, 4, 3)), w)


def test_nb201_network_takes_the_impl_setting():
  from nasjax.nn.nb201_network import NB201Network
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  arch = jnp.asarray([4, 4, 3, 4, 1, 4], jnp.int32)  # avg_pool_3x3 on most edges
  outs = []
  for impl in (ops.Impl(conv="xla"), ops.Impl(conv="xla", pool="window"), ops.Impl(conv="canonical", pool="shift")):
    net = NB201Network(4, 1, 5, impl=impl)
    # Init and forward as one program per setting (half the compiles of two).
    outs.append(jax.jit(lambda k, net=net: net.apply(net.init(k, x, arch), x, arch))(jax.random.key(1)))
  for out in outs[1:]:
    np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5)
