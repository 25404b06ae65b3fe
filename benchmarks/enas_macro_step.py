"""Compile and step seconds of one training step of the ENAS macro network, and its parameter counts.

The step is SGD with momentum on the cross-entropy of :class:`nasjax.nn.enas_macro_network.EnasMacroNetwork`
in training mode, the architecture an argument (one program for every architecture: the step is traced
once and then run on ``--archs`` different uniformly sampled architectures). Reports CPU seconds of this
process (less disturbed than wall time by other work on a shared machine) and wall seconds: initialisation,
tracing + lowering, compilation, and the mean step over ``--steps`` steps per architecture; parameters of
the shared network (every op of every layer) and of the chosen ops of the sampled architectures. Prints
one JSON object with the commit and the machine.

    python benchmarks/enas_macro_step.py --layers 12 --channels 16 --batch 32 --image 28,28,1
    python benchmarks/enas_macro_step.py --layers 12 --channels 36 --batch 128 --image 32,32,3  # paper search
"""

from __future__ import annotations

import argparse
import json
import time

import provenance


def measure(layers: int, channels: int, batch: int, image: tuple[int, int, int], steps: int, archs: int,
            double_channels: bool = False, seed: int = 0) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from nasjax.nn.enas_macro_network import EnasMacroNetwork
  from nasjax.spaces import EnasMacroSpace

  space = EnasMacroSpace(layers)
  net = EnasMacroNetwork.for_space(space, channels=channels, num_classes=10, double_channels=double_channels)
  keys = jax.random.split(jax.random.key(seed), archs + 2)
  x = jax.random.normal(keys[0], (batch, *image))
  y = jnp.arange(batch, dtype=jnp.int32) % 10
  sampled = [space.sample(k) for k in keys[2:]]
  tx = optax.sgd(0.05, momentum=0.9)
  traces = []

  def step(variables, opt_state, arch):
    traces.append(1)

    def loss_fn(params):
      logits, updates = net.apply({**variables, "params": params}, x, arch, train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    change, opt_state = tx.update(grads, opt_state, variables["params"])
    return {"params": optax.apply_updates(variables["params"], change), **updates}, opt_state, loss

  def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.process_time() - c0, time.perf_counter() - w0

  variables, init_cpu, init_wall = timed(lambda: jax.jit(lambda k: net.init(k, x, sampled[0], train=True))(keys[1]))
  opt_state = tx.init(variables["params"])
  lowered, lower_cpu, lower_wall = timed(lambda: jax.jit(step, donate_argnums=(0, 1)).lower(
      variables, opt_state, sampled[0]))
  compiled, compile_cpu, compile_wall = timed(lambda: lowered.compile())
  per_arch = []
  for arch in sampled:
    variables, opt_state, loss = compiled(variables, opt_state, arch)  # warm-up
    jax.block_until_ready(loss)
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
      variables, opt_state, loss = compiled(variables, opt_state, arch)
    jax.block_until_ready(loss)
    per_arch.append({"arch": space.to_string(arch), "step_cpu_s": (time.process_time() - c0) / steps,
                     "step_wall_s": (time.perf_counter() - w0) / steps, "loss": float(loss),
                     "params_chosen_ops": int(net.count_params_for(arch, in_channels=image[-1]))})
  return {
      "layers": layers, "channels": channels, "double_channels": double_channels, "batch": batch,
      "image": list(image), "steps_per_arch": steps, "traces": len(traces),
      "params_shared_network": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])),
      "init_cpu_s": init_cpu, "init_wall_s": init_wall, "lower_cpu_s": lower_cpu, "lower_wall_s": lower_wall,
      "compile_cpu_s": compile_cpu, "compile_wall_s": compile_wall,
      "step_cpu_s_mean": float(np.mean([a["step_cpu_s"] for a in per_arch])),
      "step_wall_s_mean": float(np.mean([a["step_wall_s"] for a in per_arch])), "archs": per_arch,
  }


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--layers", type=int, default=12)
  ap.add_argument("--channels", type=int, default=16)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--image", default="28,28,1", help="H,W,C")
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--archs", type=int, default=2)
  ap.add_argument("--double-channels", action="store_true")
  args = ap.parse_args(argv)
  image = tuple(int(v) for v in args.image.split(","))
  out = measure(args.layers, args.channels, args.batch, image, args.steps, args.archs, args.double_channels)
  out.update(provenance.of(__file__, argv))
  print(json.dumps(out, indent=1))
  return out


if __name__ == "__main__":
  main()
