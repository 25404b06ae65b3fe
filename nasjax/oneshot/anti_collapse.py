"""Rules against the skip-connection collapse of DARTS (Zela et al., ICLR 2020; Chu et al., DARTS-, ICLR
2021; Liang et al., DARTS+, 2019), chosen by the search config's ``anti_collapse``:

* ``darts_minus``: an auxiliary skip connection on every normal edge whose weight decays linearly from 1
  to 0 over the search (:func:`darts_minus`);
* ``skip_limit``: stop when the derived normal cell has ``max_skips`` skip connections; keep the previous
  epoch's cell;
* ``eigenvalue``: stop when the dominant Hessian eigenvalue of the validation loss w.r.t. the architecture
  grows: mean of the last ``eigen_window`` epochs over the mean of the window before it above
  ``1 / eigen_ratio``; keep the cell of ``eigen_window`` epochs earlier. The eigenvalue is logged every
  ``eigen_every`` epochs whichever rule is chosen.
"""

from __future__ import annotations

import numpy as np

ANTI_COLLAPSE = ("none", "darts_minus", "skip_limit", "eigenvalue")


def darts_minus(mixed: dict, skip_index: int, progress):
  """DARTS-: adds ``1 - progress`` (progress of the search in [0, 1]) to the skip weight of every normal
  edge of the mixing weights ``mixed``."""
  beta = 1.0 - progress
  return dict(mixed, normal=mixed["normal"].at[:, skip_index].add(beta))


def collapse_check(cfg, history: list[dict]) -> tuple[str | None, dict | None]:
  """Returns (reason, the record whose cell to keep) when an anti-collapse rule stops the search."""
  last = history[-1]
  if cfg.anti_collapse == "skip_limit" and last.get("normal_skips", 0) >= cfg.max_skips:
    keep = history[-2] if len(history) > 1 else last
    return (f"normal cell reached {last['normal_skips']} skip connections at epoch {last['epoch']} "
            f"(limit {cfg.max_skips}); keeping the cell of epoch {keep['epoch']}"), keep
  if cfg.anti_collapse == "eigenvalue":
    k = cfg.eigen_window
    values = [r.get("hessian_eigenvalue") for r in history]
    if len(values) >= 2 * k and all(v is not None for v in values[-2 * k:]):
      before, now = np.mean(values[-2 * k:-k]), np.mean(values[-k:])
      if now > 0 and before / now < cfg.eigen_ratio:
        keep = history[-k - 1]
        return (f"dominant Hessian eigenvalue grew from {before:.4g} to {now:.4g} (ratio {before / now:.3f} "
                f"< {cfg.eigen_ratio}); keeping the cell of epoch {keep['epoch']}"), keep
  return None, None


_collapse_check = collapse_check  # the name tests and older code import
