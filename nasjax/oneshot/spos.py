"""Single-path one-shot with uniform sampling (Guo et al., "Single Path One-Shot Neural Architecture
Search with Uniform Sampling", ECCV 2020; Li & Talwalkar, "Random Search and Reproducibility for NAS",
UAI 2019, call the same idea random search with weight sharing).

Every training step samples one architecture of the space uniformly and trains only its path of the
supernet (the discrete mode of :class:`~nasjax.nn.supernet.Supernet`, or of the NB201 network, where every
op, ``none`` included, is drawn with probability 1/5 as the benchmark's space allows). There are no architecture
parameters: the trained supernet then ranks architectures for any discrete strategy through the
weight-sharing estimator.

On NASNet and ENAS micro the edge supernet cannot run a sampled architecture as it is (a node reading one
input twice, loose-end concatenation), so there the path is the sampled encoding itself, one
``int32[num_nodes * 4]`` per cell type, for :class:`~nasjax.nn.cell_network.SharedCellNetwork` (which
:class:`~nasjax.oneshot.search.Search` builds for SPOS on those spaces).
"""

from __future__ import annotations

import jax.numpy as jnp

from nasjax.errors import NasjaxError
from nasjax.nn.cell_network import edge_supernet_is_exact
from nasjax.oneshot.method import CELL_TYPES, Method
from nasjax.spaces.nb201 import NB201_OPS, NB201Space


def spos(space) -> Method:
  if isinstance(space, NB201Space):
    return _spos_nb201(space)
  if not hasattr(space, "edge_ops"):
    raise NasjaxError(f"SPOS needs a cell space with a supernet (darts, nasnet, enas_micro, nb201); got "
                      f"{space.name!r}")

  def init_arch(key, num_edges, num_ops):
    del key, num_edges, num_ops
    return {}

  node_paths = not edge_supernet_is_exact(space)

  def mix(arch_params, key, progress):
    del arch_params, progress
    arch = space.sample(key)
    # The node-based network takes each cell's own [input_a, op_a, input_b, op_b] rows (see the module doc).
    return dict(zip(CELL_TYPES, arch.reshape(2, -1) if node_paths else space.edge_ops(arch)))

  def probabilities(arch_params):
    # No learned belief: uniform over the ops of the space (the supernet's op 0 is 'none').
    num_ops = len(space.supernet_ops)
    uniform = jnp.full((space.num_edges, num_ops), 1.0 / (num_ops - 1)).at[:, 0].set(0.0)
    return {c: uniform for c in CELL_TYPES}

  return Method("spos", init_arch, mix, probabilities, bilevel=False)


def _spos_nb201(space) -> Method:
  """NB201: one cell type, the path is the int32[6] architecture itself, 'none' one of the 5 ops."""

  def init_arch(key, num_edges, num_ops, cells=("normal",)):
    del key, num_edges, num_ops, cells
    return {}

  def mix(arch_params, key, progress):
    del arch_params, progress
    return {"normal": space.sample(key)}

  def probabilities(arch_params):
    del arch_params
    return {"normal": jnp.full((len(space.edges), len(NB201_OPS)), 1.0 / len(NB201_OPS))}

  return Method("spos", init_arch, mix, probabilities, bilevel=False)
