"""Data layer: readers, validation and the in-memory rows every stage shares."""

from minirec.data.readers import Interaction, RecDataset, load_dataset, read_csv, read_inter, write_inter

__all__ = ["Interaction", "RecDataset", "load_dataset", "read_csv", "read_inter", "write_inter"]
