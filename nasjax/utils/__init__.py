"""Checkpointing and logging shared by training and search."""
