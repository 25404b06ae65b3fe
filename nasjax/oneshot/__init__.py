"""One-shot NAS on the weight-sharing supernet: DARTS (first and exact second order), GDAS, PC-DARTS,
DrNAS, SNAS and SPOS, each a few pure functions (:class:`Method`) run by one search loop (:mod:`.search`)."""

from nasjax.oneshot.darts import darts
from nasjax.oneshot.derive import count_op, derive_arch
from nasjax.oneshot.drnas import drnas
from nasjax.oneshot.gdas import gdas
from nasjax.oneshot.hypergradient import (HESSIAN_MODES, architecture_gradient, dominant_eigenvalue,
                                          hessian_vector_product, virtual_step)
from nasjax.oneshot.method import Method
from nasjax.oneshot.pcdarts import pcdarts
from nasjax.oneshot.anti_collapse import ANTI_COLLAPSE
from nasjax.oneshot.configs import METHODS, demo_search_config, make_method, search_config
from nasjax.oneshot.search import Search, run_search
from nasjax.oneshot.snas import snas
from nasjax.oneshot.spos import spos

__all__ = ["ANTI_COLLAPSE", "HESSIAN_MODES", "METHODS", "Method", "Search", "architecture_gradient",
           "count_op", "darts", "demo_search_config", "derive_arch", "dominant_eigenvalue", "drnas", "gdas",
           "hessian_vector_product", "make_method", "pcdarts", "run_search", "search_config", "snas", "spos", "virtual_step"]
