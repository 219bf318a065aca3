"""Reader of the Extreme Classification Repository text format (Bhatia et al.): a header line ``N F L``, then one
row per example, ``l1,l2,... f:v f:v ...`` with 0-based label and feature indices (a row without labels starts with
a space). The rows after the header are svmlight/libsvm multi-label rows, which scikit-learn parses."""
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["XCData", "load_xc"]


@dataclass
class XCData:
    """features: float32 [N, F] (dense, or a torch sparse CSR tensor with ``dense=False``); labels as CSR:
    ``indptr`` int64 [N + 1] and ``indices`` int64 [nnz] (the labels of row i are indices[indptr[i]:indptr[i+1]],
    sorted, without duplicates)."""

    features: torch.Tensor
    indptr: torch.Tensor
    indices: torch.Tensor
    num_labels: int

    @property
    def num_examples(self) -> int:
        return self.indptr.numel() - 1

    def padded_labels(self) -> torch.Tensor:
        """int64 [N, P] padded with -1 (P = the largest number of labels of a row; at least 1)."""
        counts = self.indptr.diff()
        P = max(int(counts.max()) if counts.numel() else 0, 1)
        out = torch.full((self.num_examples, P), -1, dtype=torch.long)
        rows = torch.repeat_interleave(torch.arange(self.num_examples), counts)
        cols = torch.arange(self.indices.numel()) - self.indptr[:-1].repeat_interleave(counts)
        out[rows, cols] = self.indices
        return out


def load_xc(path: str, dense: bool = True) -> XCData:
    """Reads one split (e.g. ``.../Bibtex/bibtex_train.txt``) and checks it against its header."""
    from sklearn.datasets import load_svmlight_file

    with open(path, "rb") as f:
        header = f.readline().split()
        if len(header) != 3:
            raise ValueError(f"load_xc: {path}: expected a header line 'N F L', got {b' '.join(header)!r}")
        n, num_features, num_labels = (int(v) for v in header)
        x, y = load_svmlight_file(f, multilabel=True, n_features=num_features, zero_based=True, dtype=np.float32)
    if x.shape[0] != n:
        raise ValueError(f"load_xc: {path}: the header says {n} rows, the file has {x.shape[0]}")
    labels = [sorted({int(v) for v in row}) for row in y]
    flat = [v for row in labels for v in row]
    if flat and (min(flat) < 0 or max(flat) >= num_labels):
        raise ValueError(f"load_xc: {path}: label {min(flat) if min(flat) < 0 else max(flat)} outside [0, "
                         f"{num_labels})")
    indptr = torch.tensor(np.cumsum([0] + [len(r) for r in labels]), dtype=torch.long)
    indices = torch.tensor(flat, dtype=torch.long)
    if dense:
        features = torch.from_numpy(x.toarray())
    else:
        x = x.tocsr()
        features = torch.sparse_csr_tensor(torch.from_numpy(x.indptr).long(), torch.from_numpy(x.indices).long(),
                                           torch.from_numpy(x.data), size=x.shape, check_invariants=False)
    return XCData(features, indptr, indices, num_labels)
