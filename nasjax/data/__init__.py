"""Data sets, on-device augmentation, deterministic batching and data-parallel sharding."""

from nasjax.data.augment import augment_batch, cutout, normalize, random_crop, random_flip
from nasjax.data.pipeline import Batcher, data_mesh, replicate, shard_batch, subset, train_valid_split
from nasjax.data.sources import KNOWN_TFDS_NAMES, Dataset, load_dataset

__all__ = [
    "Batcher",
    "Dataset",
    "KNOWN_TFDS_NAMES",
    "augment_batch",
    "cutout",
    "data_mesh",
    "load_dataset",
    "normalize",
    "random_crop",
    "random_flip",
    "replicate",
    "shard_batch",
    "subset",
    "train_valid_split",
]
