"""Reader of the Extreme Classification Repository text format (Bhatia et al.): a header line ``N F L``, then one
row per example, ``l1,l2,... f:v f:v ...`` with 0-based label and feature indices (a row without labels starts with
a space). The rows after the header are svmlight/libsvm multi-label rows, which scikit-learn parses."""
from __future__ import annotations  # X | None annotations on Python 3.9

import re
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["XCData", "load_xc"]

_INTEGER = re.compile(rb"-?[0-9]+")  # a label (a negative one gets the range error below)


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
    """Reads one split (e.g. ``.../Bibtex/bibtex_train.txt``) and checks it against its header. A malformed file
    gets an error naming its first bad line."""
    import io

    from sklearn.datasets import load_svmlight_file

    with open(path, "rb") as f:
        raw = f.read()
    header_line, _, body = raw.partition(b"\n")
    header = header_line.removeprefix(b"\xef\xbb\xbf").split()  # a UTF-8 byte-order mark is not part of N
    try:
        if len(header) != 3:
            raise ValueError
        n, num_features, num_labels = (int(v) for v in header)
        if min(n, num_features, num_labels) < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"load_xc: {path}: expected a header line 'N F L' of three integers >= 0, got "
                         f"{header_line.strip()!r}") from None
    for token in (b"#", b"qid:"):  # svmlight extras the XC format does not have (a comment would drop features)
        at = body.find(token)
        if at >= 0:
            line = body.count(b"\n", 0, at) + 2
            raise ValueError(f"load_xc: {path} line {line}: unexpected {token.decode()!r} (the XC format has no "
                             "comments or query ids)")
    lines = body.split(b"\n") if body else []
    if body.endswith(b"\n"):  # the last line's newline
        lines.pop()
    # trailing blank lines, but not a last example without labels or features (a blank line the header counts)
    while len(lines) > n and not lines[-1].strip():
        lines.pop()
    if len(lines) != n:
        raise ValueError(f"load_xc: {path}: the header says {n} rows, the file has {len(lines)}")
    # a row without labels and features is a blank line, which the svmlight reader would skip: give it an explicit
    # zero (removed below) so that it stays a row
    blank = [i for i, line in enumerate(lines) if not line.strip()]
    for i in blank:
        lines[i] = b" 0:0"
    try:
        # scikit-learn wants n_features >= 1: with F = 0 a feature is caught below
        x, _ = load_svmlight_file(io.BytesIO(b"\n".join(lines) if blank else body), multilabel=True,
                                  n_features=max(num_features, 1), zero_based=True, dtype=np.float32)
    except ValueError as e:
        raise ValueError(f"load_xc: {path}: {_first_bad_line(lines, num_features) or e}") from None
    except OverflowError as e:  # scikit-learn's int32 feature indices, or SciPy's index dtype for F >= 2^63
        raise ValueError(f"load_xc: {path}: a feature index (or F = {num_features}) is beyond the reader's range "
                         f"(scikit-learn reads feature indices below 2^31): {e}") from None
    if num_features == 0:  # any feature is out of range (an explicit 0:0 too; blank rows hold our " 0:0" marker)
        blank_rows = set(blank)
        if any(b":" in line for i, line in enumerate(lines) if i not in blank_rows):
            raise ValueError(f"load_xc: {path}: {_first_bad_line(lines, num_features)}")
        x = x[:, :0]
    x = x.tocsr()
    bad = np.flatnonzero(~np.isfinite(x.data))
    if len(bad):  # "nan", "inf", or a number beyond float32's range
        row = int(np.searchsorted(x.indptr, bad[0], side="right")) - 1
        raise ValueError(f"load_xc: {path}: line {row + 2}: feature {int(x.indices[bad[0]])} has the value "
                         f"{x.data[bad[0]]}; feature values must be finite float32 numbers ({len(bad)} such values "
                         "in all)")
    x.eliminate_zeros()
    # the labels from the text itself: the svmlight reader returns them as float64, which took "1e0" or "1.0" for
    # label 1 and rounded labels above 2^53
    labels = []
    for i, line in enumerate(lines):
        field, row = _row_labels(line)
        if row is None:
            raise ValueError(f"load_xc: {path}: line {i + 2}: labels must be integers (decimal digits, comma-"
                             f"separated), got {field.decode('utf-8', errors='replace')!r}")
        labels.append(sorted(set(row)))
    flat = [v for row in labels for v in row]
    if flat and (min(flat) < 0 or max(flat) >= num_labels):
        raise ValueError(f"load_xc: {path}: label {min(flat) if min(flat) < 0 else max(flat)} outside [0, "
                         f"{num_labels})")
    indptr = torch.tensor(np.cumsum([0] + [len(r) for r in labels]), dtype=torch.long)
    indices = torch.tensor(flat, dtype=torch.long)
    if dense:
        try:
            features = torch.from_numpy(x.toarray())
        except MemoryError:  # numpy's message gives the size but not the way out
            raise MemoryError(f"load_xc: {path}: dense features [N, F] = [{n}, {num_features}] need "
                              f"{n * num_features * 4 / 2**30:.1f} GiB; pass dense=False for a sparse CSR "
                              "tensor") from None
    else:
        features = torch.sparse_csr_tensor(torch.from_numpy(x.indptr).long(), torch.from_numpy(x.indices).long(),
                                           torch.from_numpy(x.data), size=x.shape, check_invariants=False)
    return XCData(features, indptr, indices, num_labels)


def _row_labels(line: bytes) -> tuple[bytes, list[int] | None]:
    """A row's label field (its first token unless that is a feature ``f:v``; b"" for a row without labels) and its
    labels, None where one is not a decimal integer. Splits on ASCII whitespace, as the svmlight parser does."""
    first = line.split(None, 1)[:1]
    field = first[0] if first and b":" not in first[0] else b""
    values = field.split(b",") if field else []
    if not all(_INTEGER.fullmatch(v) for v in values):
        return field, None
    return field, [int(v) for v in values]


def _first_bad_line(lines, num_features) -> str | None:
    """'line L: why' for the first row that is not ``l1,l2,... f:v f:v ...`` (labels integers, feature indices in
    [0, F) and increasing, values numbers); None if every row looks fine. Only runs after a parse error."""
    for i, line in enumerate(lines):
        field, row = _row_labels(line)
        if row is None:
            return f"line {i + 2}: labels must be comma-separated integers, got {field.decode('utf-8', 'replace')!r}"
        # split on ASCII whitespace, as the svmlight parser does (str.split took a no-break space for one)
        tokens = [t.decode("utf-8", errors="replace") for t in line.rstrip(b"\r").split()]
        features = tokens[1:] if field else tokens
        last = -1
        for tok in features:
            idx, sep, val = tok.partition(":")
            try:
                j, _ = int(idx), float(val)
            except ValueError:
                return f"line {i + 2}: expected index:value, got {tok!r}"
            if not sep or not last < j < num_features:
                return (f"line {i + 2}: feature index {j} must lie in [0, {num_features}) and exceed the row's "
                        f"previous index {last}")
            last = j
    return None
