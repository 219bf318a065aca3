"""Loaders for the real datasets the examples and benchmarks use. Every loader takes a path."""
from .mulan import MultiLabelData, load_arff, load_mulan, read_mulan_labels

__all__ = ["MultiLabelData", "load_arff", "load_mulan", "read_mulan_labels"]
