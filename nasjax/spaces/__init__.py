"""Search spaces: an architecture is a fixed-length int32 array, a population an int32[P, D] array.

Spaces and their papers: DARTS (Liu et al., ICLR 2019), NASNet (Zoph et al., CVPR 2018), ENAS micro and
macro (Pham et al., ICML 2018), NAS-Bench-201 (Dong & Yang, ICLR 2020), NAS-RL (Zoph & Le, ICLR 2017;
``nas_rl``, and ``nas_rl_strided`` with a stride height and width per layer) and a generic chain-structured
macro space. See each module's docstring for the encoding and notation.

``get_space(name, **kwargs)`` builds a registered space by name.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from nasjax.errors import NasjaxError
from nasjax.spaces.base import Arch, Space
from nasjax.spaces.cells import (DARTS_OPS, ENAS_MICRO_OPS, NASNET_OPS, CellSpace, darts_space,
                                 enas_micro_space, nasnet_space)
from nasjax.spaces.enas_macro import ENAS_MACRO_OPS, EnasMacroSpace
from nasjax.spaces.genotype import Genotype
from nasjax.spaces.genotypes import GENOTYPES, get_genotype, lookup_genotype
from nasjax.spaces.macro import LAYER_TYPES, MacroSpace, macro_space, nas_rl_space, nas_rl_strided_space
from nasjax.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Space

_REGISTRY: dict[str, Callable[..., Space]] = {
    "darts": darts_space,
    "nasnet": nasnet_space,
    "enas_micro": enas_micro_space,
    "enas_macro": EnasMacroSpace,
    "nb201": NB201Space,
    "macro": macro_space,
    "nas_rl": nas_rl_space,
    # NAS-RL's space with a stride height and width per layer (nas_rl_space(with_strides=True)).
    "nas_rl_strided": nas_rl_strided_space,
}
_ALIASES = {"nas_bench_201": "nb201", "nasbench201": "nb201", "nasrl": "nas_rl", "nasrl_strided": "nas_rl_strided"}

SPACE_NAMES = tuple(_REGISTRY)


def get_space(name: str, **kwargs: Any) -> Space:
  """Builds the space registered as ``name`` (case-insensitive, '-' or '_'); kwargs go to its
  constructor, e.g. ``get_space("enas_micro", num_nodes=4)`` or ``get_space("macro", num_layers=6)``."""
  if not isinstance(name, str):
    raise NasjaxError(f"a space name (string) is required; accepted: {', '.join(SPACE_NAMES)}")
  key = name.strip().lower().replace("-", "_")
  key = _ALIASES.get(key, key)
  if key not in _REGISTRY:
    raise NasjaxError(f"unknown search space {name!r}; accepted: {', '.join(SPACE_NAMES)}")
  factory = _REGISTRY[key]
  params = inspect.signature(factory).parameters
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  accepted = [p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_KEYWORD and p != "name"]
  if takes_any and factory is macro_space:
    accepted += [f.name for f in MacroSpace.__dataclass_fields__.values()
                 if f.name not in ("num_layers", "name")]
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise NasjaxError(f"search space {key!r} does not take {', '.join(unknown)}; accepted: "
                      f"{', '.join(accepted) if accepted else 'no options'}")
  return factory(**kwargs)


__all__ = [
    "Arch", "Space", "CellSpace", "NB201Space", "EnasMacroSpace", "MacroSpace", "Genotype",
    "GENOTYPES", "get_genotype", "lookup_genotype", "get_space", "SPACE_NAMES", "darts_space",
    "nasnet_space", "enas_micro_space", "nas_rl_space", "nas_rl_strided_space", "macro_space", "DARTS_OPS",
    "NASNET_OPS", "ENAS_MICRO_OPS", "ENAS_MACRO_OPS", "NB201_OPS", "NB201_EDGES", "LAYER_TYPES",
]
