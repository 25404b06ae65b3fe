"""Flax building blocks: op registry, the weight-sharing supernet, discrete networks from genotypes."""
