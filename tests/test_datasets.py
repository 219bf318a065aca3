"""Dataset loaders: small ARFF files written here, and the real Mulan sets when ../shared/data is present."""
import os
import re

import numpy as np
import pytest

import torch

from torchxc.datasets import load_arff, load_mulan, load_xc, read_mulan_labels

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

DENSE = """% a comment
@relation toy
@attribute f1 numeric
@attribute L2 {0,1}
@attribute f2 numeric
@attribute L1 {0,1}
@data
1.5,1,-2,0
0,0,3.25,1
"""

SPARSE = """@relation toy
@attribute a {0,1}
@attribute b numeric
@attribute c {0,1}
@attribute lab1 {0,1}
@attribute lab2 {0,1}
@data
{0 1,3 1}
{}
{1 2.5,4 1}
{}
"""

XML = """<?xml version="1.0" encoding="utf-8"?>
<labels xmlns="http://mulan.sourceforge.net/labels"><label name="L1"></label><label name="L2"></label></labels>"""


def test_dense_arff_labels_by_name(tmp_path):
    (tmp_path / "toy.arff").write_text(DENSE)
    (tmp_path / "toy.xml").write_text(XML)
    names = read_mulan_labels(str(tmp_path / "toy.xml"))
    assert names == ["L1", "L2"]
    d = load_arff(str(tmp_path / "toy.arff"), label_names=names)
    assert d.feature_names == ["f1", "f2"] and d.label_names == ["L1", "L2"]
    np.testing.assert_array_equal(d.features, [[1.5, -2.0], [0.0, 3.25]])
    np.testing.assert_array_equal(d.labels, [[False, True], [True, False]])  # XML order, not file order


def test_sparse_arff_keeps_empty_rows(tmp_path):
    (tmp_path / "s.arff").write_text(SPARSE)
    d = load_arff(str(tmp_path / "s.arff"), num_labels=2)
    assert len(d) == 4  # the empty last row is a row
    np.testing.assert_array_equal(d.features, [[1, 0, 0], [0, 0, 0], [0, 2.5, 0], [0, 0, 0]])
    np.testing.assert_array_equal(d.labels, [[True, False], [False, False], [False, True], [False, False]])
    with pytest.raises(ValueError, match="no attributes named"):
        load_arff(str(tmp_path / "s.arff"), label_names=["nope"])
    # a sparse row leaves out a nominal attribute's first declared value, which need not be 0
    (tmp_path / "n.arff").write_text(SPARSE.replace("@attribute lab1 {0,1}", "@attribute lab1 {1,0}"))
    n = load_arff(str(tmp_path / "n.arff"), num_labels=2)
    np.testing.assert_array_equal(n.labels, [[True, False], [True, False], [True, True], [True, False]])


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "mulan")), reason="../shared/data/mulan not present")
@pytest.mark.parametrize("name,n_train,n_test,features,labels,card", [
    ("scene", 1211, 1196, 294, 6, 1.07), ("emotions", 391, 202, 72, 6, 1.87), ("yeast", 1500, 917, 103, 14, 4.24),
    ("medical", 333, 645, 1449, 45, 1.25), ("bibtex", 4880, 2515, 1836, 159, 2.40),
    ("delicious", 12920, 3185, 500, 983, 19.0),
])
def test_real_mulan_sets(name, n_train, n_test, features, labels, card):
    root = os.path.join(SHARED, "mulan")
    train, test = load_mulan(root, name, "train"), load_mulan(root, name, "test")
    assert train.features.shape == (n_train, features) and test.features.shape == (n_test, features)
    assert train.labels.shape == (n_train, labels) and test.labels.shape == (n_test, labels)
    both = np.concatenate([train.labels, test.labels])
    assert abs(both.sum(1).mean() - card) < 0.02  # label cardinality in the data README


def test_xc_format(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("3 5 4\n2,0,2 0:1 3:0.5\n 1:2\n3 4:1\n")  # duplicate label, a row without labels
    d = load_xc(str(p))
    np.testing.assert_allclose(d.features.numpy(), [[1, 0, 0, 0.5, 0], [0, 2, 0, 0, 0], [0, 0, 0, 0, 1]])
    assert d.indptr.tolist() == [0, 2, 2, 3] and d.indices.tolist() == [0, 2, 3] and d.num_labels == 4
    assert d.padded_labels().tolist() == [[0, 2], [-1, -1], [3, -1]]
    sparse = load_xc(str(p), dense=False)
    assert torch.equal(sparse.features.to_dense(), d.features)
    p.write_text("3 5 4\n0 0:1\n")
    with pytest.raises(ValueError, match="header says 3 rows, the file has 1"):
        load_xc(str(p))
    p.write_text("1 5 4\n4 0:1\n")
    with pytest.raises(ValueError, match=r"label 4 outside \[0, 4\)"):
        load_xc(str(p))


def test_xc_format_edge_cases_and_errors(tmp_path):
    p = tmp_path / "t.txt"
    # a UTF-8 byte-order mark, CRLF, and a row with neither labels nor features (a lone space) that stays a row
    p.write_bytes(b"\xef\xbb\xbf3 4 3\r\n0 0:1\r\n \r\n1 1:1\r\n")
    d = load_xc(str(p))
    assert d.indptr.tolist() == [0, 1, 1, 2] and d.indices.tolist() == [0, 1] and d.features.shape == (3, 4)
    assert d.features[1].abs().sum() == 0 and load_xc(str(p), dense=False).features.values().numel() == 2
    # such a row last (it was taken for a trailing blank line), with and without the final newline and blank lines
    for header_only in (b"1 5 3\n", b"1 5 3"):  # N = 1 but no row
        p.write_bytes(header_only)
        with pytest.raises(ValueError, match="the header says 1 rows, the file has 0"):
            load_xc(str(p))
    for tail in (b" \n", b" ", b" \n\n\n"):
        p.write_bytes(b"3 4 3\n0 0:1\n1 1:1\n" + tail)
        d = load_xc(str(p))
        assert d.indptr.tolist() == [0, 1, 2, 2] and d.features.shape == (3, 4) and d.features[2].abs().sum() == 0
    for body, match in (("2 4 3\n1.7 0:1\n0 1:1\n", "line 2: labels must be integers"),
                        ("2 4 3\n0 1:1\n0,x 1:1\n", "line 3: labels must be comma-separated integers"),
                        ("2 4 3\n0 4:1\n1 1:1\n", r"line 2: feature index 4 must lie in \[0, 4\)"),
                        ("2 4 3\n0 2:1 1:2\n1 1:1\n", "line 2: feature index 1 .* previous index 2"),
                        ("2 4 3\n0 1:1\n1 1:x\n", "line 3: expected index:value, got '1:x'"),
                        ("1 4.0 3\n0 1:1\n", "expected a header line 'N F L' of three integers"),
                        ("2 4 3\n0 1:1\n1 1:1 # 2:5\n", "line 3: unexpected '#'"),
                        # non-finite feature values (1e39 overflows float32) loaded silently
                        ("2 4 3\n0 1:1\n1 0:1 2:nan\n", "line 3: feature 2 has the value nan; feature values must "
                                                         "be finite"),
                        ("2 4 3\n0 1:-inf\n1 1:1\n", "line 2: feature 1 has the value -inf"),
                        ("2 4 3\n0 1:1\n1 3:1e39\n", "line 3: feature 3 has the value inf")):
        p.write_text(body)
        with pytest.raises(ValueError, match=match):
            load_xc(str(p))


def test_arff_errors(tmp_path):
    head = ("@relation r\n@attribute f1 numeric\n@attribute f2 numeric\n@attribute L1 {0,1}\n"
            "@attribute L2 {0,1}\n@data\n")
    p = tmp_path / "a.arff"
    p.write_text(head)
    d = load_arff(str(p), num_labels=2)  # no rows
    assert d.features.shape == (0, 2) and d.labels.shape == (0, 2)
    p.write_text(head + "1,2,0,1\n")
    for bad in (0, 5, -1):
        with pytest.raises(ValueError, match="num_labels must lie in"):
            load_arff(str(p), num_labels=bad)
    p.write_text(head + "1,2,0,1\n3,4,?,1\n")
    with pytest.raises(ValueError, match="data row 2 has a missing .* value for attribute 'L1'"):
        load_arff(str(p), num_labels=2)
    with pytest.raises(ValueError, match="a label is named twice"):
        load_arff(str(p), label_names=["L1", "L1"])
    p.write_text(head.replace("f1 numeric", "f1 {red,green}") + "red,2,0,1\n")
    with pytest.raises(ValueError, match="attribute 'f1' is nominal with values"):
        load_arff(str(p), num_labels=2)
    # loaded silently before: an infinite feature, an empty label list (every label column became a feature), a
    # sparse row giving an attribute twice (the last value won); failed deep inside: num_labels 2.0; read letter by
    # letter: a label name given as a string; ignored: num_labels beside label_names
    p.write_text(head + "inf,2,0,1\n")
    with pytest.raises(ValueError, match="data row 1 has an infinite value for attribute 'f1'"):
        load_arff(str(p), num_labels=2)
    p.write_text(head + "1,2,0,1\n")
    for kw, msg in ((dict(label_names=[]), "label_names is empty"),
                    (dict(label_names="L1"), "label_names must be a list of attribute names, got the string 'L1'"),
                    (dict(num_labels=2.0), "num_labels must be an int, got float 2.0"),
                    (dict(label_names=["L1"], num_labels=2), "label_names names 1 labels but num_labels is 2")):
        with pytest.raises(ValueError, match=re.escape(msg)):
            load_arff(str(p), **kw)
    assert load_arff(str(p), label_names=["L2"], num_labels=1).labels.tolist() == [[True]]
    for n in (np.int64(2), np.array(2), torch.tensor(2)):  # integers that numpy and torch wrap
        assert load_arff(str(p), num_labels=n).labels.shape == (1, 2)
    for body, row in (("{0 1,1 3}\n{0 1,0 2}\n", 2), ("{1 1,01 5,2 1}\n", 1), ("1,2,0,1\n{0 1,0 2}\n", 2)):
        p.write_text(head + body)  # 01 is attribute 1; a dense file's reader takes sparse rows too
        with pytest.raises(ValueError, match=f"data row {row} gives attribute index [01] more than once"):
            load_arff(str(p), num_labels=2)
    p.write_text(head.replace("L1 {0,1}", "L1 {'0','1'}") + "{ 0 1 ,1\t2, 2 '1'}\n{}\n{3 1}\n")  # spaces, quotes
    d = load_arff(str(p), num_labels=2)
    assert d.features.tolist() == [[1, 2], [0, 0], [0, 0]] and d.labels.tolist() == [[True, False], [False, False],
                                                                                     [False, True]]
    p.write_text(head.replace("f2 numeric", "f2 string") + "{0 1,1 'a, 0 b',2 1}\n")  # not a duplicate: a string
    with pytest.raises(ValueError, match="attribute 'f2' is a string attribute"):
        load_arff(str(p), num_labels=2)
    p.write_text(head.replace("L1 {0,1}", "L1 numeric") + "1,2,1.0000001,1\n")  # the message said "the value 1"
    with pytest.raises(ValueError, match=r"has the value 1\.0000001 for label 'L1'"):
        load_arff(str(p), num_labels=2)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "xc")), reason="../shared/data/xc not present")
@pytest.mark.parametrize("name,n_train,n_test,features,labels", [
    ("Bibtex/bibtex", 4880, 2515, 1836, 159), ("Delicious/delicious", 12920, 3185, 500, 983)])
def test_real_xc_sets_match_mulan(name, n_train, n_test, features, labels):
    train = load_xc(os.path.join(SHARED, "xc", name + "_train.txt"))
    test = load_xc(os.path.join(SHARED, "xc", name + "_test.txt"))
    assert train.features.shape == (n_train, features) and test.features.shape == (n_test, features)
    assert train.num_labels == labels == test.num_labels
    mulan = load_mulan(os.path.join(SHARED, "mulan"), name.split("/")[1], "test")  # same rows, same order
    dense = torch.zeros(n_test, labels, dtype=torch.bool)
    dense[torch.repeat_interleave(torch.arange(n_test), test.indptr.diff()), test.indices] = True
    assert torch.equal(dense, torch.from_numpy(mulan.labels))
    np.testing.assert_allclose(test.features.numpy(), mulan.features, rtol=1e-6)


def test_mulan_malformed_files_get_errors_naming_them(tmp_path):
    head = "@relation r\n@attribute f numeric\n@attribute y {0,1}\n@data\n"
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "s-train.arff").write_text(head + "3,1\n")
    xml = tmp_path / "s" / "s.xml"
    for text, msg in (('<labels xmlns="http://mulan.sourceforge.net/labels"></labels>', "names no labels"),
                      ('<labels><label nam="y"/></labels>', "label 1 has no name attribute"),
                      ('<labels><label name="y"></labels>', "is not well-formed XML")):
        xml.write_text(text)  # an empty list made the label column a feature
        with pytest.raises(ValueError, match=f"{xml}.*{msg}" if "XML" in msg else msg):
            load_mulan(str(tmp_path), "s", "train")
    p = tmp_path / "a.arff"
    p.write_text("@relation r\n@attribute f numeric\n@attribute y numeric\n@data\n1,1\n1,2\n1,0.7\n")
    with pytest.raises(ValueError, match=r"data row 2 has the value 2 for label 'y'; labels must be 1 \(positive\) "
                                         r"or 0 / -1 \(negative\) \(2 such values"):
        load_arff(str(p), label_names=["y"])  # was read as True, True, True with "> 0.5"
    p.write_text("@relation r\n@attribute f numeric\n@attribute y {-1,1}\n@data\n1,1\n2,-1\n")
    np.testing.assert_array_equal(load_arff(str(p), label_names=["y"]).labels, [[True], [False]])  # -1 / 1 labels
    p.write_text(head + "3,2\n")
    with pytest.raises(ValueError, match=f"load_arff: {p}: .*2"):  # liac-arff's own error, now with the path
        load_arff(str(p), label_names=["y"])
    # a tab-indented header line (liac-arff strips only spaces: the attribute was dropped, shifting the columns)
    p.write_text("@relation r\n@attribute f0 numeric\n\t@attribute f1 numeric\n@attribute f2 numeric\n"
                 "@attribute y {0,1}\n@data\n{1 2,2 1}\n")
    d = load_arff(str(p), label_names=["y"])
    assert d.feature_names == ["f0", "f1", "f2"]
    np.testing.assert_array_equal(d.features, [[0, 2, 1]])
    np.testing.assert_array_equal(d.labels, [[False]])


def test_xc_malformed_labels_and_headers(tmp_path):
    p = tmp_path / "t.txt"
    for body, match in (("1 3 4\nnan 0:1\n", r"line 2: labels must be integers .*, got 'nan'"),
                        ("1 3 4\ninf 0:1\n", r"line 2: labels must be integers .*, got 'inf'"),
                        # float spellings of a label the float64 reader took for integers
                        ("1 3 4\n1e0 0:1\n", r"line 2: labels must be integers .*, got '1e0'"),
                        ("1 3 4\n2,1.0 0:1\n", r"line 2: labels must be integers .*, got '2,1.0'"),
                        ("1 3 4\n+1 0:1\n", r"line 2: labels must be integers .*, got '\+1'"),
                        ("1 3 4\n-1 0:1\n", r"label -1 outside \[0, 4\)"),
                        ("1 3 4\n1,2, 0:1\n", "line 2: labels must be comma-separated integers, got '1,2,'"),
                        ("-1 3 4\n", "three integers >= 0"),
                        ("1 -3 4\n0 0:1\n", "three integers >= 0"),
                        ("1 0 4\n0 0:1\n", r"line 2: feature index 0 must lie in \[0, 0\)")):
        p.write_text(body)
        with pytest.raises(ValueError, match=match):
            load_xc(str(p))
    p.write_text("1 0 3\n1 0:0\n")  # an explicit zero is a feature too, out of range with F = 0
    with pytest.raises(ValueError, match=r"line 2: feature index 0 must lie in \[0, 0\)"):
        load_xc(str(p))
    big = 2**53 + 1  # read as text, not through float64 (which rounds it to 2^53)
    p.write_text(f"2 3 {2**60}\n{big},3 0:1\r\n{big - 1}\n")
    d = load_xc(str(p))
    assert d.indices.tolist() == [3, big, big - 1] and d.indptr.tolist() == [0, 2, 3]
    p.write_text("2 0 4\n0,3\n \n")  # no features at all is a valid (if odd) file
    d = load_xc(str(p))
    assert d.features.shape == (2, 0) and d.indices.tolist() == [0, 3] and d.indptr.tolist() == [0, 2, 2]


def test_arff_integer_attributes_unknown_header_lines_and_bom(tmp_path):
    """From a user-side probe: liac-arff truncates INTEGER values (a label of 0.99 read as 0, 1.9 as 1, a feature
    of 2.9 as 2; inf failed with a bare OverflowError), drops a header line it does not know ("@atribute" lost a
    column and shifted a sparse file's indices: wrong labels, no error), and a byte-order mark failed with "Invalid
    layout"."""
    p = tmp_path / "i.arff"
    head = ("@relation r\n@attribute f1 numeric\n@ATTRIBUTE f2 INTEGER\n@attribute y1 integer\n@attribute y2 {0,1}\n"
            "@data\n")
    p.write_text(head + "1,2.9,1,0\n3,-4,0,1\n")
    d = load_arff(str(p), num_labels=2)  # Weka reads INTEGER as NUMERIC: the values as written
    np.testing.assert_array_equal(d.features, np.array([[1, 2.9], [3, -4]], dtype=np.float32))
    np.testing.assert_array_equal(d.labels, [[True, False], [False, True]])
    for row, match in (("1,2,0.99,1", "the value 0.99 for label 'y1'"), ("1,2,1.9,0", "the value 1.9 for label 'y1'"),
                       ("1,inf,1,0", "infinite value for attribute 'f2'")):
        p.write_text(head + row + "\n")
        with pytest.raises(ValueError, match=re.escape(f"load_arff: {p}: data row 1 has ") + ".*" + re.escape(match)):
            load_arff(str(p), num_labels=2)
    p.write_text("@relation r\n@attribute f1 numeric\n@atribute f2 numeric\n@attribute f3 numeric\n"
                 "@attribute y1 {0,1}\n@attribute y2 {0,1}\n@data\n{0 1,2 1,3 1}\n")
    with pytest.raises(ValueError, match=re.escape(f"load_arff: {p} line 3: expected @relation, @attribute, @data or "
                                                   "a % comment in the header, got '@atribute f2 numeric'")):
        load_arff(str(p), num_labels=2)
    p.write_text(head.replace("@attribute f1", "attribute f1") + "1,2,1,0\n")
    with pytest.raises(ValueError, match="line 2: expected @relation"):
        load_arff(str(p), num_labels=2)
    p.write_bytes(b"\xef\xbb\xbf" + DENSE.encode())
    np.testing.assert_array_equal(load_arff(str(p), label_names=["L1", "L2"]).features, [[1.5, -2.0], [0.0, 3.25]])


def test_xc_huge_headers_and_odd_spaces(tmp_path):
    """A feature index >= 2^31 (or F >= 2^63) overflowed inside scikit-learn's parser, a dense matrix too large for
    memory gave numpy's bare error, and a no-break space between features gave a message without a line number."""
    p = tmp_path / "t.txt"
    p.write_text("2 2147483658 4\n0 2147483651:1\n3 5:5\n")
    with pytest.raises(ValueError, match=r"a feature index \(or F = 2147483658\) is beyond the reader's range"):
        load_xc(str(p), dense=False)
    p.write_text(f"2 {2**63} 4\n0 0:1\n3 5:5\n")
    with pytest.raises(ValueError, match=r"beyond the reader's range"):
        load_xc(str(p))
    p.write_text("2 2147483648 4\n0 0:1\n3 5:5\n")  # hashed features: a large F with small indices is fine
    d = load_xc(str(p), dense=False)
    assert d.features.shape == (2, 2**31) and d.features.col_indices().tolist() == [0, 5]
    p.write_text("2 3 4\n0 0:1\n3 1:5\n")
    import scipy.sparse  # the dense-size message, without allocating: a MemoryError from toarray is faked

    def no_memory(self, *args, **kwargs):
        raise MemoryError("Unable to allocate")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scipy.sparse.csr_matrix, "toarray", no_memory)
        with pytest.raises(MemoryError, match=r"dense features \[N, F\] = \[2, 3\] need 0.0 GiB; pass dense=False"):
            load_xc(str(p))
    assert load_xc(str(p)).features.tolist() == [[1, 0, 0], [0, 5, 0]]
    p.write_bytes("2 3 4\n0 0:1\n3 1:5\u00a02:1\n".encode())
    with pytest.raises(ValueError, match=re.escape("line 3: expected index:value, got '1:5\\xa02:1'")):
        load_xc(str(p))
