"""The Python examples in README.md run as written.

Each ```python block of the README runs in a fresh namespace. Blocks that are fragments of a training loop use names
they do not define (the tree sampler's `features`, `x`, `xi`, ...); PRELUDE defines those on a small synthetic
problem, so that the calls, argument names and shapes the README shows are the ones the package accepts.
"""
import pathlib
import re

import pytest
import torch

import torchxc

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

PRELUDE = '''
import torch, torchxc
torch.manual_seed(0)
C, F, N, B = 37, 12, 400, 8
features = torch.randn(N, F)
labels = torch.randint(C, (N,))
x, y = torch.randn(B, F), torch.randint(C, (B,))
W_model = torch.randn(C, F, requires_grad=True)
def xi(x, lab):       # a linear model's logit of each row's labels: lab [B] or [B, S]
    w = W_model[lab]
    return (w * x[:, None, :]).sum(-1) if lab.dim() == 2 else (w * x).sum(-1)
def xi_all(x):        # the same model's logits of every label, [B, C]
    return x @ W_model.T
'''


def python_blocks():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index):
    ns = {}
    exec(compile(PRELUDE, "<prelude>", "exec"), ns)
    code = python_blocks()[index]
    exec(compile(code, f"README.md python block {index + 1}", "exec"), ns)
    assert isinstance(ns.get("loss"), torch.Tensor) and torch.isfinite(ns["loss"]).all()
    if "p" in ns:  # the sparsemax example
        assert torch.allclose(ns["p"].sum(-1), torch.ones(ns["p"].shape[0], device=ns["p"].device))
        assert ns["scores"].grad is not None
    if "sampler" in ns:  # the tree sampler example
        sampler, x, C = ns["sampler"], ns["x"], ns["C"]
        assert isinstance(sampler, torchxc.TreeSampler)
        assert ns["neg"].shape == ns["neg_log_q"].shape == (x.shape[0], 16)
        assert ns["scores"].shape == (x.shape[0], C) and torch.isfinite(ns["scores"]).all()
        ns["loss"].backward()
        assert ns["W_model"].grad is not None and torch.isfinite(ns["W_model"].grad).all()
