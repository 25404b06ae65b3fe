import os

# Data-parallel code is tested on fake CPU devices; this must happen before JAX initialises.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
