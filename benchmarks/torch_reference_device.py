"""Runs the PyTorch reference step script unchanged on an accelerator, with honest clocks.

    python benchmarks/torch_reference_device.py cuda ../shared/reference/torch_darts_step.py --mode weights

The reference (``../shared/reference/torch_darts_step.py``) builds its tensors on the default device and
reads ``time.perf_counter()`` around each step. This wrapper makes ``cuda`` the default device before the
script runs and synchronises the device before every clock read, so queued kernels are counted in the step
that launched them (without it, PyTorch's asynchronous launches would make the reference look faster than
it is). The script's own JSON line is printed back with the device's name and its peak allocated memory.
Everything else (model, optimisers, the paper's finite-difference second order, cuDNN defaults) is the
reference's own.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
import time


def main(argv: list[str]) -> int:
  if len(argv) < 2:
    raise SystemExit("usage: torch_reference_device.py DEVICE REFERENCE.py [reference args...]")
  device, script, rest = argv[0], argv[1], argv[2:]
  on_cuda = device.startswith("cuda")
  import torch  # pylint: disable=import-outside-toplevel
  if on_cuda and not torch.cuda.is_available():
    raise SystemExit(f"torch {torch.__version__} sees no CUDA device")
  torch.set_default_device(device)
  if on_cuda:
    clock = time.perf_counter

    def synchronised_clock() -> float:
      torch.cuda.synchronize()
      return clock()

    time.perf_counter = synchronised_clock
  sys.argv = [script] + rest
  captured = io.StringIO()
  with contextlib.redirect_stdout(captured):
    runpy.run_path(script, run_name="__main__")
  record = json.loads(captured.getvalue().strip().splitlines()[-1])
  record["device"] = device
  if on_cuda:
    record["device_name"] = torch.cuda.get_device_name()
    record["peak_device_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    record["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    record["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
  print(json.dumps(record), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
