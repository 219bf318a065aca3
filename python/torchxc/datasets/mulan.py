"""Mulan multi-label datasets: ARFF files (dense or sparse) plus an XML file naming the label attributes.

Mulan stores the labels as {0,1} attributes of the ARFF file and lists their names in ``<name>.xml``. They are
usually the last attributes, but not always in the XML's order (yeast), so labels are located by name. Parsing
uses liac-arff, which reads both the dense and the sparse (``{index value, ...}``) ARFF formats.
"""
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .._checks import as_int

__all__ = ["MultiLabelData", "load_arff", "load_mulan", "read_mulan_labels"]


@dataclass
class MultiLabelData:
    """features float32 [N, F], labels bool [N, L], with the attribute names of both."""

    features: np.ndarray
    labels: np.ndarray
    feature_names: List[str]
    label_names: List[str]

    def __len__(self) -> int:
        return self.features.shape[0]


def read_mulan_labels(xml_path: str) -> List[str]:
    """Label names from a Mulan XML file (``<labels><label name="..."/>...``), in file order."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"read_mulan_labels: {xml_path} is not well-formed XML: {e}") from None
    names = []
    for el in root.iter():
        if el.tag.split("}")[-1] != "label":
            continue
        name = el.get("name")
        if not name:
            raise ValueError(f"read_mulan_labels: {xml_path}: label {len(names) + 1} has no name attribute")
        names.append(name)
    if not names:  # the label columns would silently become features
        raise ValueError(f"read_mulan_labels: {xml_path} names no labels (expected <label name=\"...\"/> elements)")
    return names


def _sparse_duplicate(row: str):
    """The first attribute index that a sparse data row ``{i v, j w, ...}`` gives twice (liac-arff keeps the last
    value silently), or None. Indices are compared as numbers (01 is 1); only numeric rows are checked exactly (a
    quoted value holding ", " is split wrongly, but such attributes are refused anyway)."""
    seen = set()
    for item in row.strip("{}").split(","):
        head = item.split(None, 1)
        if not head:
            continue
        try:
            index = int(head[0])
        except ValueError:
            continue
        if index in seen:
            return index
        seen.add(index)
    return None


_HEADER_KEYWORDS = ("@relation", "@attribute", "@data")
_INTEGER_TYPE = re.compile(r"\s(integer)\s*$", re.IGNORECASE)


def _arff_lines(path: str, f):
    """The file's lines for liac-arff, each stripped (liac-arff strips only spaces: a tab-indented @attribute line
    was dropped, shifting every later column). Header lines that are not @relation / @attribute / @data or a
    comment are refused (liac-arff drops them silently: "@atribute" lost a column and shifted a sparse file's
    indices), and INTEGER attributes are read as NUMERIC, as Weka does (liac-arff truncates their values: a label
    of 0.99 became 0, a feature of 2.9 became 2, and inf failed with an OverflowError)."""
    in_data = False
    for number, line in enumerate(f, 1):
        s = line.strip()
        if not in_data and s and not s.startswith("%"):
            keyword = s.split(None, 1)[0].lower()
            if keyword not in _HEADER_KEYWORDS:
                raise ValueError(f"load_arff: {path} line {number}: expected @relation, @attribute, @data or a % "
                                 f"comment in the header, got {s!r:.60}")
            in_data = keyword == "@data"
            if keyword == "@attribute":
                s = _INTEGER_TYPE.sub(" numeric", s)
        yield s


def _scan_arff(path: str):
    """(sparse format?, number of data rows, (row, index) of the first attribute a sparse row gives twice or None).
    Sparse rows may be empty, so liac-arff's COO output alone cannot tell how many rows there are."""
    sparse, rows, in_data, twice = False, 0, False, None
    with open(path, encoding="utf-8-sig", errors="replace") as f:  # -sig: a byte-order mark is skipped
        for line in f:
            s = line.strip()
            if not s or s.startswith("%"):
                continue
            if in_data:
                if rows == 0:
                    sparse = s.startswith("{")
                rows += 1
                if twice is None and s.startswith("{"):  # a dense file's reader takes sparse rows too
                    index = _sparse_duplicate(s)
                    if index is not None:
                        twice = (rows, index)
            else:
                in_data = s.lower().startswith("@data")
    return sparse, rows, twice


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def load_arff(path: str, label_names: Optional[Sequence[str]] = None, num_labels: Optional[int] = None) -> MultiLabelData:
    """Reads a multi-label ARFF file.

    Args:
        path: the .arff file (dense or sparse format).
        label_names: names of the label attributes (e.g. from :func:`read_mulan_labels`); or
        num_labels: the number of label attributes at the end of the file (when no names are given).
    """
    import arff  # liac-arff

    if isinstance(label_names, (str, bytes)):  # would be read letter by letter
        raise ValueError(f"load_arff: {path}: label_names must be a list of attribute names, got the string "
                         f"{label_names!r}")
    if num_labels is not None:
        given, num_labels = num_labels, as_int(num_labels)  # an int, numpy's or a 0-d tensor's; not 2.0
        if num_labels is None:
            raise ValueError(f"load_arff: {path}: num_labels must be an int, got {type(given).__name__} {given!r}")
    if label_names is not None:
        label_names = list(label_names)
        if not label_names:  # the label columns would silently become features
            raise ValueError(f"load_arff: {path}: label_names is empty; name at least one label attribute")
        if num_labels is not None and num_labels != len(label_names):
            raise ValueError(f"load_arff: {path}: label_names names {len(label_names)} labels but num_labels is "
                             f"{num_labels}; give one of them")
    elif num_labels is None:
        raise ValueError("load_arff: give label_names or num_labels")
    sparse, num_rows, twice = _scan_arff(path)
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        try:
            data = arff.load(_arff_lines(path, f), return_type=arff.COO if sparse else arff.DENSE)
        except arff.ArffException as e:
            raise ValueError(f"load_arff: {path}: {e}") from None
    names = [a[0] for a in data["attributes"]]
    for name, kind in data["attributes"]:
        if isinstance(kind, list) and not all(_is_number(v) for v in kind):
            what = f"nominal with values {kind[:4]}"
        elif isinstance(kind, str) and kind.upper() == "STRING":
            what = "a string attribute"
        else:
            continue
        raise ValueError(f"load_arff: {path}: attribute {name!r} is {what}; only numeric attributes (labels: 0/1) "
                         "are supported")
    if twice is not None:  # after the attribute checks: a string value holding ", " would be split wrongly
        raise ValueError(f"load_arff: {path}: data row {twice[0]} gives attribute index {twice[1]} more than once")
    if label_names is None:
        if not 1 <= num_labels <= len(names):
            raise ValueError(f"load_arff: {path} has {len(names)} attributes, so num_labels must lie in [1, "
                             f"{len(names)}], got {num_labels}")
        label_names = names[len(names) - num_labels:]
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"load_arff: {path}: a label is named twice in {list(label_names)[:10]}...")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in label_names if n not in index]
    if missing:
        raise ValueError(f"load_arff: {path} has no attributes named {missing[:5]}")
    label_cols = [index[n] for n in label_names]
    label_set = set(label_cols)
    feature_cols = [i for i in range(len(names)) if i not in label_set]
    if sparse:
        values, rows, cols = data["data"]
        # an entry a sparse row leaves out is 0 for a numeric attribute, but the first declared value of a nominal
        # one ({1,0} leaves out 1)
        default = np.array([float(kind[0]) if isinstance(kind, list) and kind else 0.0
                            for _, kind in data["attributes"]], dtype=np.float32)
        full = np.broadcast_to(default, (num_rows, len(names))).copy()
        full[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)] = np.asarray(values, dtype=np.float32)
    else:
        full = np.asarray(data["data"], dtype=np.float32).reshape(-1, len(names))  # (0, F) without rows
    missing_at = np.argwhere(np.isnan(full))
    if len(missing_at):  # liac-arff reads "?" as None, which becomes NaN
        r, c = missing_at[0]
        raise ValueError(f"load_arff: {path}: data row {r + 1} has a missing ('?') or NaN value for attribute "
                         f"{names[c]!r} ({len(missing_at)} such values in all); impute them first")
    infinite_at = np.argwhere(np.isinf(full))
    if len(infinite_at):  # "inf", or a number beyond float32's range
        r, c = infinite_at[0]
        raise ValueError(f"load_arff: {path}: data row {r + 1} has an infinite value for attribute {names[c]!r} "
                         f"({len(infinite_at)} such values in all; values must be finite float32 numbers)")
    labels = full[:, label_cols]
    bad = np.argwhere((labels != 0) & (labels != 1) & (labels != -1))
    if len(bad):  # a numeric label attribute can hold anything; 0/1 (or -1/1) is what a label means
        r, c = bad[0]
        value = np.format_float_positional(labels[r, c], trim="-")  # :g would round 1.0000001 to 1
        raise ValueError(f"load_arff: {path}: data row {r + 1} has the value {value} for label "
                         f"{label_names[c]!r}; labels must be 1 (positive) or 0 / -1 (negative) ({len(bad)} such "
                         "values in all)")
    return MultiLabelData(
        features=np.ascontiguousarray(full[:, feature_cols]),
        labels=labels == 1,
        feature_names=[names[i] for i in feature_cols],
        label_names=list(label_names),
    )


def load_mulan(root: str, name: str, split: str) -> MultiLabelData:
    """``root/<name>/<name>-<split>.arff`` with labels named by ``root/<name>/<name>.xml`` (Mulan's layout).

    Example::

        >>> train = load_mulan("../shared/data/mulan", "scene", "train")
        >>> train.features.shape, train.labels.shape
        ((1211, 294), (1211, 6))
    """
    folder = os.path.join(root, name)
    labels = read_mulan_labels(os.path.join(folder, f"{name}.xml"))
    return load_arff(os.path.join(folder, f"{name}-{split}.arff"), label_names=labels)
