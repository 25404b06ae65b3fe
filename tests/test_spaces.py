"""Tests of nasjax.spaces: encodings, operators under jit/vmap, notations, validation, NB-201 isomorphism.

Compilation dominates the run time on CPU, so each space compiles one function (population, mutation,
crossover, neighbours, validity) once per module and the tests share its results.
"""

import json
import random

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.spaces import (GENOTYPES, SPACE_NAMES, CellSpace, EnasMacroSpace, Genotype, MacroSpace,
                           NB201Space, get_genotype, get_space, lookup_genotype)

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")

POP = 1000
NUM_NEIGHBOR_ROWS = 4

DARTS_V2_PUBLISHED = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def _run_operators(space):
  """One jitted function per space; returns host results of two calls with different keys."""
  chex.clear_trace_counter()  # chex counts per function code, and every space defines `run` anew

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key):
    k_pop, k_mut, k_cx = jax.random.split(key, 3)
    pop = jax.vmap(space.sample)(jax.random.split(k_pop, POP))
    mutants = jax.vmap(space.mutate)(jax.random.split(k_mut, POP), pop)
    children = jax.vmap(space.crossover)(jax.random.split(k_cx, POP), pop, jnp.roll(pop, 1, axis=0))
    nbrs = jax.vmap(space.neighbors)(pop[:NUM_NEIGHBOR_ROWS])
    valid = jax.vmap(space.is_valid)
    return dict(pop=pop, mutants=mutants, children=children, nbrs=nbrs, pop_ok=valid(pop),
                mut_ok=valid(mutants), cx_ok=valid(children), nbr_ok=jax.vmap(valid)(nbrs))

  # The operators do not depend on the PRNG implementation; "rbg" keys compile several times faster
  # on CPU than the default threefry (covered by test_jit_and_eager_agree), which keeps this file fast.
  first = jax.device_get(run(jax.random.key(1, impl="rbg")))
  second = jax.device_get(run(jax.random.key(2, impl="rbg")))  # a retrace fails assert_max_traces
  return first, second


_CACHE = {}


@pytest.fixture(params=SPACE_NAMES)
def space_run(request):
  name = request.param
  if name not in _CACHE:
    space = get_space(name)
    _CACHE[name] = (space,) + _run_operators(space)
  return _CACHE[name]


# ----------------------------------------------------------------------------------------- registry
def test_registry_names_and_errors():
  assert set(SPACE_NAMES) == {"darts", "nasnet", "enas_micro", "enas_macro", "nb201", "macro", "nas_rl",
                              "nas_rl_strided"}
  assert get_space("NAS-Bench-201") == NB201Space()
  assert get_space("enas_micro", num_nodes=4).num_nodes == 4
  assert get_space("macro", num_layers=3, skips=False).num_decisions == 15
  with pytest.raises(NasjaxError, match="accepted: darts, nasnet"):
    get_space("resnet")
  with pytest.raises(NasjaxError, match="does not take num_layers"):
    get_space("darts", num_layers=3)
  with pytest.raises(NasjaxError, match="num_nodes"):
    get_space("enas_micro", num_nodes=0)
  with pytest.raises(NasjaxError, match="layer_types"):
    get_space("macro", layer_types=("conv", "lstm"))
  with pytest.raises(NasjaxError, match="kernel_sizes"):
    get_space("macro", kernel_sizes=5)


def test_spaces_are_hashable_static_arguments():
  space = get_space("darts")
  assert hash(space) == hash(get_space("darts")) and space == get_space("darts")
  f = jax.jit(lambda sp, key: sp.sample(key), static_argnums=0)
  assert f(space, jax.random.key(0)).shape == (space.num_decisions,)


# ----------------------------------------------------------------------------------------- operators
def test_population_operators_compile_once_and_stay_valid(space_run):
  space, first, second = space_run
  d = space.num_decisions
  assert first["pop"].shape == (POP, d) and first["pop"].dtype == np.int32
  assert first["nbrs"].shape == (NUM_NEIGHBOR_ROWS, space.num_neighbors, d)
  assert first["mutants"].dtype == np.int32 and first["nbrs"].dtype == np.int32
  for out in (first, second):
    for key in ("pop_ok", "mut_ok", "cx_ok", "nbr_ok"):
      assert np.all(out[key]), f"{space.name}: invalid architectures from {key}"
  assert not np.array_equal(first["pop"], second["pop"])
  # Host validation agrees with is_valid.
  for a in first["mutants"][:20]:
    space.check(a)


def test_sampling_covers_every_choice(space_run):
  space, first, _ = space_run
  pop = first["pop"]
  for d, n in enumerate(space.num_choices[:12]):
    if n > 1 and not isinstance(space, MacroSpace):
      assert len(np.unique(pop[:, d])) == n, f"{space.name}: decision {d} never takes some value"


def _mutation_is_small(space, a, b):
  diff = np.nonzero(a != b)[0]
  if len(diff) == 1:
    return True
  if isinstance(space, CellSpace) and space.distinct_inputs and len(diff) == 2:
    # Documented swap: the two input slots of one node exchange their values.
    i, j = diff
    return j - i == 2 and i % 4 == 0 and a[i] == b[j] and a[j] == b[i]
  if isinstance(space, MacroSpace):
    # Documented type change: the type slot changes and only fields the new type ignores reset to 0.
    w = space.layer_width
    layer = diff[0] // w
    return (diff[0] % w == 0 and np.all(diff // w == layer) and np.all(b[diff[1:]] == 0))
  return False


def test_mutation_changes_one_decision(space_run):
  space, first, _ = space_run
  pop, mutants = first["pop"], first["mutants"]
  assert np.all(np.any(pop != mutants, axis=1)), f"{space.name}: a mutation changed nothing"
  bad = [k for k in range(POP) if not _mutation_is_small(space, pop[k], mutants[k])]
  assert not bad, f"{space.name}: mutation {pop[bad[0]]} -> {mutants[bad[0]]}"


def test_crossover_mixes_parents_by_group(space_run):
  space, first, _ = space_run
  pop, children = first["pop"], first["children"]
  other = np.roll(pop, 1, axis=0)
  groups = np.asarray(space.gene_groups)
  for k in range(50):
    for g in np.unique(groups):
      sel = groups == g
      from_a = np.array_equal(children[k][sel], pop[k][sel])
      from_b = np.array_equal(children[k][sel], other[k][sel])
      assert from_a or from_b, f"{space.name}: group {g} of child {k} comes from neither parent"


def test_neighbors_are_single_changes(space_run):
  space, first, _ = space_run
  arch, nbrs = first["pop"][0], first["nbrs"][0]
  changed = [row for row in nbrs if not np.array_equal(row, arch)]
  assert all(_mutation_is_small(space, arch, row) for row in changed)
  if not isinstance(space, MacroSpace):
    assert len(changed) == space.num_neighbors
  unique = {tuple(row) for row in changed}
  if isinstance(space, CellSpace) and space.distinct_inputs:
    assert len(unique) == space.num_neighbors - 2 * space.num_nodes  # each swap appears twice
  elif not isinstance(space, MacroSpace):
    assert len(unique) == space.num_neighbors


@pytest.mark.parametrize("name", ["darts", "macro"])
def test_jit_and_eager_agree(name):
  space = get_space(name)
  key, k2 = jax.random.split(jax.random.key(7))
  eager = space.sample(key)
  np.testing.assert_array_equal(eager, jax.jit(space.sample)(key))
  np.testing.assert_array_equal(space.mutate(k2, eager), jax.jit(space.mutate)(k2, eager))


# ----------------------------------------------------------------------------------------- notation
def test_string_and_json_round_trip(space_run):
  space, first, _ = space_run
  for a in list(first["pop"][:15]) + list(first["mutants"][:5]):
    s = space.to_string(a)
    back = space.from_string(s)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, a, err_msg=s)
    data = json.loads(json.dumps(space.to_json(a)))
    np.testing.assert_array_equal(space.from_json(data), a)
  with pytest.raises(NasjaxError, match="not"):
    space.from_json({"space": "something_else", "encoding": [0] * space.num_decisions})
  with pytest.raises(NasjaxError, match="needs an 'arch'"):
    space.from_json({"space": space.name})
  with pytest.raises(NasjaxError, match="different architectures"):
    a, b = first["pop"][0], first["pop"][1]
    space.from_json({"arch": space.to_string(a), "encoding": [int(v) for v in b]})
  with pytest.raises(NasjaxError):
    space.to_string(np.full(space.num_decisions, 99))
  with pytest.raises(NasjaxError, match="length"):
    space.to_string(np.zeros(3, np.int32))


def _corruptions(s, count, seed):
  rng = random.Random(seed)
  alphabet = "()[],'\"|+~<-=_ 0123456789abcxyz\n"
  out = []
  for _ in range(count):
    k = rng.randrange(len(s))
    kind = rng.randrange(4)
    if kind == 0:
      out.append(s[:k] + s[k + 1:])
    elif kind == 1:
      out.append(s[:k] + rng.choice(alphabet) + s[k:])
    elif kind == 2:
      out.append(s[:k] + rng.choice(alphabet) + s[k + 1:])
    else:
      out.append(s[:k])
  return out


def test_corrupted_strings_raise_only_nasjax_errors(space_run):
  space, first, _ = space_run
  s = space.to_string(first["pop"][0])
  for bad in _corruptions(s, 150, seed=len(s)):
    try:
      arch = space.from_string(bad)
    except NasjaxError as e:
      assert str(e)
    else:
      space.check(arch)  # whatever parses must be a valid encoding


@pytest.mark.parametrize("name", SPACE_NAMES)
@pytest.mark.parametrize("garbage", ["__import__('os')", "", "   ", "[]", "Genotype(", "|||", "a" * 5000,
                                     "conv(h3,w3,f24,s1)" + "|" * 40, "\x00", "é"])
def test_garbage_raises_nasjax_error(name, garbage):
  with pytest.raises(NasjaxError):
    get_space(name).from_string(garbage)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_non_string_input_raises_nasjax_error(name):
  with pytest.raises(NasjaxError, match="expected a string"):
    get_space(name).from_string(123)


# ----------------------------------------------------------------------------------------- sizes
def _count_valid(space):
  grids = np.meshgrid(*[np.arange(n) for n in space.num_choices], indexing="ij")
  every = np.stack([g.ravel() for g in grids], axis=1).astype(np.int32)
  return int(jnp.sum(jax.jit(jax.vmap(space.is_valid))(every)))


@pytest.mark.parametrize("space", [
    CellSpace("tiny_distinct", ("a", "b"), 2, True),
    CellSpace("tiny_repeat", ("a", "b", "c"), 1, False, "loose_ends"),
    MacroSpace(2, kernel_sizes=(1, 3), filters=(8, 16), strides=(1, 2)),
    MacroSpace(2, layer_types=("conv", "pool", "identity"), kernel_sizes=(1, 3), filters=(8,), strides=(1, 2),
               name="macro_split", split_strides=True),
    EnasMacroSpace(num_layers=3),
    NB201Space(),
], ids=lambda s: s.name)
def test_size_counts_valid_encodings(space):
  assert space.size == _count_valid(space)


def test_published_sizes():
  assert get_space("nb201").size == 15625
  assert get_space("enas_macro").size == 6 ** 12 * 2 ** 66
  darts = get_space("darts")
  assert darts.size == (np.prod([(i + 2) * (i + 1) * 49 for i in range(4)], dtype=object)) ** 2
  assert get_space("nas_rl").size == (4 * 4 * 4) ** 15 * 2 ** (15 * 14 // 2)
  # Stride height and width are two decisions of 3 values each.
  assert get_space("nas_rl", with_strides=True).size == (4 * 4 * 4 * 3 * 3) ** 15 * 2 ** 105


# ----------------------------------------------------------------------------------------- cells
def test_darts_v2_round_trips_to_the_published_notation():
  darts = get_space("darts")
  arch = darts.from_string(DARTS_V2_PUBLISHED)
  assert darts.to_string(arch) == DARTS_V2_PUBLISHED
  assert get_genotype("DARTS").to_string() == DARTS_V2_PUBLISHED
  # As written in DARTS' genotypes.py: other quotes, range(), newlines, a name prefix, trailing commas.
  styled = ('DARTS_V2 = Genotype(\n  normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),'
            ' ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0),\n'
            '  ("dil_conv_3x3", 2),], normal_concat=range(2, 6),\n  reduce=[("max_pool_3x3", 0), '
            '("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 0), '
            '("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],\n'
            '  reduce_concat=range(2, 6),\n)')
  np.testing.assert_array_equal(darts.from_string(styled), arch)


def test_darts_v2_edge_ops_and_views():
  darts = get_space("darts")
  arch = darts.encode(get_genotype("darts_v2"))
  assert darts.num_edges == 14 and darts.supernet_ops[0] == "none"
  edge_ops = np.asarray(jax.jit(darts.edge_ops)(arch))
  assert edge_ops.shape == (2, 14)
  assert list((edge_ops != 0).sum(axis=1)) == [8, 8]
  ops = darts.supernet_ops
  # normal node 0 reads 0 and 1 through sep_conv_3x3; node 3 (edges 9..13) reads 0 (skip) and 2 (dil).
  assert [ops[k] for k in edge_ops[0, :2]] == ["sep_conv_3x3", "sep_conv_3x3"]
  assert [ops[k] for k in edge_ops[0, 9:14]] == ["skip_connect", "none", "dil_conv_3x3", "none", "none"]
  assert darts.concat(arch) == ((2, 3, 4, 5), (2, 3, 4, 5))
  assert np.asarray(darts.node_inputs(arch)).shape == (2, 4, 2)
  assert np.asarray(darts.concat_mask(arch)).all()


@pytest.mark.parametrize("name", list(GENOTYPES) + ["DARTS", "NASNet-A", "amoebanet_a", "darts-v1"])
def test_every_shipped_genotype_parses_in_its_space(name):
  space_name, genotype = lookup_genotype(name)
  space = get_space(space_name)
  arch = space.encode(genotype)
  assert bool(space.is_valid(arch))
  assert space.decode(arch) == genotype
  assert space.to_string(arch) == genotype.to_string()
  np.testing.assert_array_equal(space.from_string(genotype.to_string()), arch)
  assert Genotype.from_json(json.loads(json.dumps(genotype.to_json()))) == genotype
  normal_concat, reduce_concat = space.concat(arch)
  assert normal_concat == genotype.normal_concat and reduce_concat == genotype.reduce_concat


def test_loose_ends_views_for_repeated_inputs():
  nasnet = get_space("nasnet")
  arch = nasnet.encode(get_genotype("NASNet"))
  mask = np.asarray(jax.jit(nasnet.concat_mask)(arch))
  assert [k + 2 for k in np.nonzero(mask[1])[0]] == [4, 5, 6]
  inputs, ops = np.asarray(nasnet.node_inputs(arch)), np.asarray(nasnet.node_ops(arch))
  assert list(inputs[0, 3]) == [0, 0]  # node 3 of the normal cell averages input 0 twice
  assert [nasnet.ops[k] for k in ops[0, 3]] == ["avg_pool_3x3", "avg_pool_3x3"]
  # "identity", the NASNet paper's name, is read as skip_connect.
  s = get_genotype("NASNet").to_string().replace("skip_connect", "identity")
  np.testing.assert_array_equal(nasnet.from_string(s), arch)


def test_enas_genotype_matches_the_released_fixed_arc():
  # scripts/cifar10_micro_final.sh of the ENAS code: per node [input_a, op_a, input_b, op_b], op numbers
  # 0..4 = sep_conv_3x3, sep_conv_5x5, avg_pool_3x3, max_pool_3x3, identity.
  arc = ("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 "
         "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1").split()
  enas_ops = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "skip_connect")
  space = get_space("enas_micro")
  expected = [int(v) if k % 2 == 0 else space.ops.index(enas_ops[int(v)]) for k, v in enumerate(arc)]
  np.testing.assert_array_equal(space.encode(get_genotype("ENAS")), expected)


def test_unknown_genotype_name():
  with pytest.raises(NasjaxError, match="DARTS_V1"):
    get_genotype("PNASNet")


def _darts_v2_with(old, new, count=1):
  assert old in DARTS_V2_PUBLISHED
  return DARTS_V2_PUBLISHED.replace(old, new, count)


@pytest.mark.parametrize("space_name,text,match", [
    ("darts", _darts_v2_with("('dil_conv_3x3', 2)]", "('dil_conv_3x3', 2)"), "expected"),
    ("darts", _darts_v2_with("Genotype(", "Genotype "), r"'\(' after 'Genotype'"),
    ("darts", _darts_v2_with("Genotype(", "Genotype"), r"expected 'Genotype\(', found 'Genotypenormal'"),
    ("darts", _darts_v2_with("reduce_concat=[2, 3, 4, 5])", "reduce_concat=[2, 3, 4, 5]"), "end of input"),
    ("darts", _darts_v2_with("sep_conv_3x3", "sep_conv_9x9"), "unknown op 'sep_conv_9x9'.*accepted ops"),
    ("darts", _darts_v2_with("('sep_conv_3x3', 0)", "('none', 0)"), "'none'"),
    ("darts", _darts_v2_with("('dil_conv_3x3', 2)]", "('dil_conv_3x3', 2), ('sep_conv_3x3', 0), "
                             "('sep_conv_3x3', 1)]"), "5 nodes.*4 nodes"),
    ("darts", _darts_v2_with("('sep_conv_3x3', 1)", "('sep_conv_3x3', 2)"), "can only read 0..1"),
    ("darts", _darts_v2_with("('sep_conv_3x3', 1)", "('sep_conv_3x3', 0)"), "twice"),
    ("darts", _darts_v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4]"), "normal_concat"),
    ("darts", _darts_v2_with("('sep_conv_3x3', 0)", "('sep_conv_3x3', -1)"), "negative"),
    ("darts", _darts_v2_with("('sep_conv_3x3', 0)", "('sep_conv_3x3, 0)"), "unterminated"),
    ("darts", _darts_v2_with("normal_concat", "normal_concot"), "unknown field 'normal_concot'"),
    ("darts", _darts_v2_with("reduce_concat", "normal_concat"), "given twice"),
    ("darts", _darts_v2_with(", reduce_concat=[2, 3, 4, 5]", ""), "missing field"),
    ("darts", _darts_v2_with("[2, 3, 4, 5]", "range(2, '6')"), "integer"),
    ("darts", _darts_v2_with("[2, 3, 4, 5]", "sorted([2, 3, 4, 5])"), "range"),
    ("darts", DARTS_V2_PUBLISHED + "; import os", "unexpected character ';'"),
    ("darts", "__import__('os').system('ls')", "Genotype"),
    ("nasnet", get_genotype("NASNet").to_string().replace("reduce_concat=[4, 5, 6]",
                                                          "reduce_concat=[2, 3, 4, 5, 6]"),
     "loose ends.*\\[4, 5, 6\\]"),
    ("nasnet", get_genotype("NASNet").to_string().replace("sep_conv_5x5", "dil_conv_5x5"),
     "accepted ops: skip_connect"),
    ("enas_micro", get_genotype("ENAS").to_string().replace("('skip_connect', 0)", "('skip_connect', 7)"),
     "can only read"),
    ("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|conv_5x5~1|skip_connect~2|",
     "unknown op 'conv_5x5'.*none, skip_connect"),
    ("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~2|+|skip_connect~0|none~1|skip_connect~2|",
     "must come from node 1"),
    ("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 nodes"),
    ("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|none~1|skip_connect~2|", "2 incoming"),
    ("nb201", "|nor_conv_3x3~0|+nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|none~2|", "'|' bars"),
    ("nb201", "|nor_conv_3x3-0|+|none~0|none~1|+|none~0|none~1|none~2|", "op~source"),
    ("enas_macro", "|".join(["conv_3x3"] * 11), "12 layers"),
    ("enas_macro", "|".join(["conv_7x7"] + ["conv_3x3"] * 11), "unknown op 'conv_7x7'.*accepted ops"),
    ("enas_macro", "|".join(["conv_3x3", "conv_3x3<-1"] + ["conv_3x3"] * 10), "accepted sources are 0..0"),
    ("enas_macro", "|".join(["conv_3x3<-0"] + ["conv_3x3"] * 11), "layer 0 has no skip"),
    ("enas_macro", "|".join(["conv_3x3"] * 3 + ["conv_3x3<-1,1"] + ["conv_3x3"] * 8), "twice"),
    ("enas_macro", "|".join(["conv_3x3"] * 3 + ["conv_3x3<-x"] + ["conv_3x3"] * 8), "not a layer number"),
    ("macro", "|".join(["conv(h3,w3,f24,s1)"] * 7 + ["lstm(f24)"]), "unknown layer type 'lstm'"),
    ("macro", "|".join(["conv(h3,w3,f24)"] * 8), "missing s"),
    ("macro", "|".join(["pool(h3,w3,f24,s1)"] * 8), "does not take 'f'"),
    ("macro", "|".join(["conv(h3,w3,f25,s1)"] * 8), "filters 25 is not offered; accepted: 24, 36"),
    ("macro", "|".join(["identity()"] * 8), "takes no arguments"),
    ("macro", "|".join(["dense"] * 8), "needs arguments"),
    ("macro", "|".join(["conv(h3,h3,f24,s1)"] * 8), "given twice"),
    ("macro", "|".join(["identity", "identity<-3"] + ["identity"] * 6), "accepted sources are 0..0"),
    ("nas_rl", "|".join(["pool(h3,w3,s1)"] + ["conv(h3,w3,f24,s1)"] * 14), "accepted: conv"),
    ("nas_rl", "|".join(["conv(h3,w3,f24,s2)"] + ["conv(h3,w3,f24,s1)"] * 14), "stride 2 is not offered"),
])
def test_bad_strings_raise_helpful_errors(space_name, text, match):
  with pytest.raises(NasjaxError, match=match):
    get_space(space_name).from_string(text)


def test_macro_without_skips_rejects_skip_notation():
  space = get_space("macro", num_layers=2, skips=False)
  with pytest.raises(NasjaxError, match="no skip connections"):
    space.from_string("identity|identity<-0")


def test_genotype_parser_accepts_tuples_and_rejects_bad_structure():
  g = Genotype.from_string("Genotype(normal=(('a', 0), ('b', 1)), normal_concat=(2,), "
                           "reduce=[('a', 1), ('b', 0)], reduce_concat=range(2, 3))")
  assert g.normal == (("a", 0), ("b", 1)) and g.normal_concat == (2,) and g.reduce_concat == (2,)
  with pytest.raises(NasjaxError, match="even"):
    Genotype.from_string("Genotype(normal=[('a', 0)], normal_concat=[2], reduce=[('a', 0)], "
                         "reduce_concat=[2])")
  with pytest.raises(NasjaxError, match="repeats"):
    Genotype(normal=[("a", 0), ("b", 1)], normal_concat=[2, 2], reduce=[("a", 0), ("b", 1)],
             reduce_concat=[2])
  with pytest.raises(NasjaxError, match="exactly"):
    Genotype.from_json({"normal": []})
  with pytest.raises(NasjaxError, match="pair"):
    Genotype.from_json({"normal": ["a"], "normal_concat": [2], "reduce": [], "reduce_concat": [2]})


# ----------------------------------------------------------------------------------------- NB-201
NB = NB201Space()


def test_nb201_notation_and_indices():
  s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
  arch = NB.from_string(s)
  np.testing.assert_array_equal(arch, [3, 3, 4, 1, 3, 1])
  assert NB.to_string(arch) == s
  assert NB.ops_code(arch) == "334131"
  index = int(NB.arch_to_index(arch))
  assert index == int("334131", 5)
  every = jnp.arange(15625)
  archs = jax.jit(jax.vmap(NB.index_to_arch))(every)
  np.testing.assert_array_equal(jax.jit(jax.vmap(NB.arch_to_index))(archs), every)


def test_nb201_isomorphism_count_is_6466():
  strings = {NB.canonical_string(NB.index_to_arch(i)) for i in range(0, 15625, 997)}
  assert len(strings) > 1
  ids = NB.unique_ids()
  assert ids.shape == (15625,) and ids.dtype == np.int32
  assert len(np.unique(ids)) == 6466 == NB.num_unique
  assert np.all(ids <= np.arange(15625)) and np.all(ids[ids] == ids)
  # The canonical strings themselves split the cells into exactly the same 6,466 classes.
  canon = [NB.canonical_string(np.asarray((i // 5 ** np.arange(5, -1, -1)) % 5)) for i in range(15625)]
  assert len(set(canon)) == 6466
  for i in range(0, 15625, 61):
    assert canon[i] == canon[ids[i]]


@pytest.mark.parametrize("a,b,same", [
    # Ops on edges leaving a zero node (node 1 = none) do not matter.
    ("|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
     "|none~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|", True),
    # The only path to the output is x -skip-> node 2 -skip-> node 3: node 1's op is irrelevant.
    ("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|",
     "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|", True),
    # skip_connect is the identity and the sum at a node is commutative.
    ("|skip_connect~0|+|none~0|none~1|+|nor_conv_3x3~0|skip_connect~1|none~2|",
     "|skip_connect~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|", True),
    # A node summing only zeros is not the zero marker in NAS-Bench-201's rule.
    ("|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|",
     "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", False),
    # Every edge into the output is none: what node 1 computes is irrelevant.
    ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
     "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|", True),
    # ... but an op applied to a zero-summing node still counts (node 2 = 0+0 is not zero).
    ("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|nor_conv_3x3~2|",
     "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|", False),
])
def test_nb201_known_equivalences(a, b, same):
  xa, xb = NB.from_string(a), NB.from_string(b)
  assert (NB.canonical_string(xa) == NB.canonical_string(xb)) == same
  canon = jax.jit(jax.vmap(NB.canonicalize))(jnp.stack([xa, xb]))
  assert np.array_equal(canon[0], canon[1]) == same
  assert int(NB.arch_to_index(canon[0])) <= int(NB.arch_to_index(xa))


def test_nb201_canonical_string_notation():
  arch = NB.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
                        "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
  assert NB.canonical_string(arch) == ("avg_pool_3x3(nor_conv_3x3(x))+nor_conv_3x3(x)+"
                                       "nor_conv_3x3(nor_conv_3x3(x))+x")


# ----------------------------------------------------------------------------------------- macro
def test_macro_describe_and_notation():
  space = get_space("macro", num_layers=4)
  s = "conv(h3,w5,f36,s1)|pool(s2,h3,w3)<-0|dense(f64)|identity<-0,2"
  arch = space.from_string(s)
  assert space.to_string(arch) == "conv(h3,w5,f36,s1)|pool(h3,w3,s2)<-0|dense(f64)|identity<-0,2"
  layers = space.describe(arch)
  assert layers[0] == {"type": "conv", "kernel": (3, 5), "filters": 36, "stride": 1, "skips": []}
  assert layers[1] == {"type": "pool", "kernel": (3, 3), "filters": None, "stride": 2, "skips": [0]}
  assert layers[2]["filters"] == 64 and layers[2]["kernel"] is None
  assert layers[3] == {"type": "identity", "kernel": None, "filters": None, "stride": None,
                       "skips": [0, 2]}
  skip = np.asarray(space.skip_matrix(arch))
  assert skip[3, 0] == 1 and skip[3, 2] == 1 and skip.sum() == 3
  bad = arch.copy()
  bad[5 * 3 + 3] = 2  # filters of the identity layer must stay 0
  assert not bool(space.is_valid(bad))
  with pytest.raises(NasjaxError, match="ignores filters"):
    space.check(bad)


def test_enas_macro_describe():
  space = EnasMacroSpace(num_layers=3)
  arch = space.from_string("conv_3x3|sep_conv_5x5<-0|max_pool_3x3<-1,0")
  assert space.to_string(arch) == "conv_3x3|sep_conv_5x5<-0|max_pool_3x3<-0,1"
  assert space.describe(arch)[2] == {"op": "max_pool_3x3", "skips": [0, 1]}
  np.testing.assert_array_equal(space.skip_matrix(arch), [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
  assert get_space("enas_macro").num_decisions == 12 + 66
