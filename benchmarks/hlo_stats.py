"""Counts the fused kernels of a compiled XLA program: how many, and how many distinct ones.

XLA:CPU compiles each distinct fused computation once and reuses it for identical ones (same ops, shapes
and constants), so a program's compile time follows the number of *distinct* kernels more than the number
of loop bodies or fusions (DARTS search supernet, 2026-11-27: 3,612 loop fusions but 1,114 distinct ones
were compiled, one ``FusionCompiler::Compile`` each). Used by ``supernet_step.py --hlo-stats``:

    python benchmarks/supernet_step.py --modes weights --hlo-stats
"""

from __future__ import annotations

import collections
import hashlib
import re

_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{$")
_NAME = re.compile(r"%[\w.\-]+")
_METADATA = re.compile(r", metadata=\{.*?\}")


def _computations(hlo: str) -> tuple[dict[str, list[str]], str | None]:
  comps, current, entry = {}, None, None
  for line in hlo.splitlines():
    header = _HEADER.match(line)
    if header and not line.startswith(" "):
      current = header.group(2)
      comps[current] = []
      if header.group(1):
        entry = current
      continue
    if current is not None:
      comps[current].append(line)
  return comps, entry


def kernel_stats(hlo: str) -> dict:
  """Fusions by kind (total and distinct), while loops, and where the distinct fusions live.

  ``distinct_by_place`` attributes each distinct kernel to the computation of its first call in the
  module's text; XLA prints the entry computation last, so "entry" counts the kernels that no loop body
  (or other computation) shares.
  """
  comps, entry = _computations(hlo)
  bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
  total, distinct = collections.Counter(), collections.defaultdict(set)
  first_seen = {}
  for name, lines in comps.items():
    for line in lines:
      if " fusion(" not in line:
        continue
      kind = re.search(r"kind=(\w+)", line)
      callee = re.search(r"calls=%?([\w.\-]+)", line)
      if not kind or not callee:
        continue
      text = "\n".join(_NAME.sub("%", _METADATA.sub("", l)) for l in comps.get(callee.group(1), []))
      digest = hashlib.md5(text.encode()).hexdigest()
      total[kind.group(1)] += 1
      distinct[kind.group(1)].add(digest)
      first_seen.setdefault(digest, "entry" if name == entry else "loop_body" if name in bodies else "other")
  return {"fusions": dict(total), "distinct_fusions": {k: len(v) for k, v in distinct.items()},
          "distinct_by_place": dict(collections.Counter(first_seen.values())),
          "while_loops": len(re.findall(r" while\(", hlo))}
