"""Published cell genotypes, each with the space it belongs to.

* ``DARTS_V1``, ``DARTS_V2`` -- Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
  ICLR 2019: the first- and second-order CIFAR-10 cells as released in the authors' ``cnn/genotypes.py``
  (``DARTS`` = ``DARTS_V2``, the cell of the paper's 2.76% result).
* ``NASNet`` -- NASNet-A, Zoph, Vasudevan, Shlens & Le, "Learning Transferable Architectures for Scalable
  Image Recognition", CVPR 2018, as transcribed in DARTS' ``genotypes.py`` (5 nodes; normal concat
  [2..6], reduce concat [4, 5, 6]); ``identity`` is written ``skip_connect``.
* ``AmoebaNet`` -- AmoebaNet-A, Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier
  Architecture Search", AAAI 2019, as transcribed in DARTS' ``genotypes.py`` (5 nodes; normal concat
  [4, 5, 6], reduce concat [3, 4, 6]). It lies in the NASNet space (its ops are a subset of the 13).
* ``ENAS`` -- the ENAS micro CIFAR-10 cell, Pham, Guan, Zoph, Le & Dean, "Efficient Neural Architecture
  Search via Parameter Sharing", ICML 2018, decoded from the ``fixed_arc`` of the authors'
  ``scripts/cifar10_micro_final.sh`` (op numbers 0..4 = sep 3x3, sep 5x5, avg pool, max pool, identity).

Every concat listed here equals the loose-ends (NASNet, ENAS) or all-nodes (DARTS) rule of its space.
"""

from __future__ import annotations

from nasjax.errors import NasjaxError
from nasjax.spaces.genotype import Genotype

DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)

DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)

NASNET = Genotype(
    normal=[("sep_conv_5x5", 1), ("sep_conv_3x3", 0),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
            ("avg_pool_3x3", 1), ("skip_connect", 0),
            ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
            ("sep_conv_3x3", 1), ("skip_connect", 1)],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[("sep_conv_5x5", 1), ("sep_conv_7x7", 0),
            ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
            ("avg_pool_3x3", 1), ("sep_conv_5x5", 0),
            ("skip_connect", 3), ("avg_pool_3x3", 2),
            ("sep_conv_3x3", 2), ("max_pool_3x3", 1)],
    reduce_concat=[4, 5, 6],
)

AMOEBANET = Genotype(
    normal=[("avg_pool_3x3", 0), ("max_pool_3x3", 1),
            ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("avg_pool_3x3", 3),
            ("sep_conv_3x3", 1), ("skip_connect", 1),
            ("skip_connect", 0), ("avg_pool_3x3", 1)],
    normal_concat=[4, 5, 6],
    reduce=[("avg_pool_3x3", 0), ("sep_conv_3x3", 1),
            ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
            ("sep_conv_7x7", 0), ("avg_pool_3x3", 1),
            ("max_pool_3x3", 0), ("max_pool_3x3", 1),
            ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)],
    reduce_concat=[3, 4, 6],
)

# fixed_arc normal: 0 2 0 0 | 0 4 0 1 | 0 4 1 1 | 1 0 0 1 | 0 2 1 1
#           reduce: 1 0 1 0 | 0 3 0 2 | 1 1 3 1 | 1 0 0 4 | 0 3 1 1
ENAS = Genotype(
    normal=[("avg_pool_3x3", 0), ("sep_conv_3x3", 0),
            ("skip_connect", 0), ("sep_conv_5x5", 0),
            ("skip_connect", 0), ("sep_conv_5x5", 1),
            ("sep_conv_3x3", 1), ("sep_conv_5x5", 0),
            ("avg_pool_3x3", 0), ("sep_conv_5x5", 1)],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[("sep_conv_3x3", 1), ("sep_conv_3x3", 1),
            ("max_pool_3x3", 0), ("avg_pool_3x3", 0),
            ("sep_conv_5x5", 1), ("sep_conv_5x5", 3),
            ("sep_conv_3x3", 1), ("skip_connect", 0),
            ("max_pool_3x3", 0), ("sep_conv_5x5", 1)],
    reduce_concat=[2, 4, 5, 6],
)

GENOTYPES: dict[str, tuple[str, Genotype]] = {
    "DARTS_V1": ("darts", DARTS_V1),
    "DARTS_V2": ("darts", DARTS_V2),
    "NASNet": ("nasnet", NASNET),
    "AmoebaNet": ("nasnet", AMOEBANET),
    "ENAS": ("enas_micro", ENAS),
}

_ALIASES = {"darts": "DARTS_V2", "nasnet_a": "NASNet", "amoebanet_a": "AmoebaNet"}


def _key(name: str) -> str:
  return name.strip().lower().replace("-", "_")


def _resolve(name: str) -> str:
  if not isinstance(name, str):
    raise NasjaxError(f"a genotype name (string) is required; got {type(name).__name__}")
  table = {_key(k): k for k in GENOTYPES}
  table.update(_ALIASES)
  key = _key(name)
  if key not in table:
    names = ", ".join(list(GENOTYPES) + ["DARTS", "NASNet-A", "AmoebaNet-A"])
    raise NasjaxError(f"unknown genotype {name!r}; accepted (case-insensitive, '-' or '_'): {names}")
  return table[key]


def get_genotype(name: str) -> Genotype:
  """The published genotype called ``name`` (case-insensitive; '-' and '_' interchangeable)."""
  return GENOTYPES[_resolve(name)][1]


def lookup_genotype(name: str) -> tuple[str, Genotype]:
  """``(space_name, genotype)`` for a published genotype; ``get_space(space_name).encode(genotype)``."""
  return GENOTYPES[_resolve(name)]
