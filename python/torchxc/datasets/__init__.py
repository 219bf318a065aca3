"""Loaders for the real datasets the examples and benchmarks use. Every loader takes a path."""
from .mulan import MultiLabelData, load_arff, load_mulan, read_mulan_labels
from .xc import XCData, load_xc

__all__ = ["MultiLabelData", "XCData", "load_arff", "load_mulan", "load_xc", "read_mulan_labels"]
