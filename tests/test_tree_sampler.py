"""The adversarial tree sampler, the frequency sampler and the sampling losses.

Reference: q(y | z) is the product over the path to y's leaf of sigmoid(+-(w_i . z + b_i)), except at nodes whose
right subtree holds only padding, where the walk goes left with probability 1. The reference below enumerates
every leaf's path explicitly in float64.
"""
import functools
import math
import os
import types

import numpy as np
import pytest
import torch
import torchxc
from scipy.stats import chisquare
from hypothesis import given, settings
from hypothesis import strategies as st
from testing import device_ids, devices, max_err, num_threads, outputs_without_and_with, requires_cuda


def make_tree(C, k, dtype=torch.float64, device="cpu", seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    D = math.ceil(math.log2(C)) if C > 1 else 0
    W = (torch.randn((1 << D) - 1, k, generator=g, dtype=torch.float64) * scale).to(dtype)
    b = torch.randn((1 << D) - 1, generator=g, dtype=torch.float64).to(dtype)
    leaf_to_label = torch.full((1 << D,), -1, dtype=torch.long)
    leaf_to_label[:C] = torch.randperm(C, generator=g)
    return torchxc.TreeSampler.from_parameters(W, b, C, leaf_to_label).to(device)


def float64_copy(sampler):
    """The same tree with its (float32) parameters in float64."""
    return torchxc.TreeSampler.from_parameters(sampler.node_weight.detach().double(),
                                               sampler.node_bias.detach().double(), sampler.num_labels,
                                               sampler.leaf_to_label)


def chi2_pvalue(counts, probs):
    """Chi-square goodness-of-fit p-value of counts against probabilities, pooling bins expected below 5."""
    n = counts.sum()
    expected = probs.double() * n
    big = expected >= 5
    obs, exp_ = counts[big].double(), expected[big]
    if expected[~big].sum() > 0:
        obs = torch.cat([obs, counts[~big].double().sum(0, keepdim=True)])
        exp_ = torch.cat([exp_, expected[~big].sum(0, keepdim=True)])
    exp_ = exp_ * obs.sum() / exp_.sum()
    return chisquare(obs.numpy(), exp_.numpy()).pvalue


def reference_log_q(sampler, z):
    """log q(y | z) for every label by walking each leaf's path, in float64: [B, C]."""
    W, b = sampler.node_weight.detach().double().cpu(), sampler.node_bias.detach().double().cpu()
    z = z.double().cpu()
    C, D = sampler.num_labels, sampler.depth
    out = torch.empty(z.shape[0], C, dtype=torch.float64)
    for leaf in range(C):
        lq = torch.zeros(z.shape[0], dtype=torch.float64)
        node = 0
        for level in range(D):
            right = (leaf >> (D - 1 - level)) & 1
            p = node - ((1 << level) - 1)
            if ((2 * p + 1) << (D - level - 1)) < C:  # the right subtree holds a label
                logit = z @ W[node] + b[node]
                lq += torch.nn.functional.logsigmoid(logit if right else -logit)
            node = 2 * node + 1 + right
        out[:, sampler.leaf_to_label[leaf].item()] = lq
    return out


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("C", [1, 2, 3, 37, 64, 1000])
def test_log_prob_all_matches_reference_and_sums_to_one(device, C):
    sampler = make_tree(C, 5, device=device)
    z = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    lqa = sampler.log_prob_all(z)
    assert lqa.shape == (7, C)
    assert max_err(lqa, reference_log_q(sampler, z)) < 1e-12
    assert max_err(lqa.exp().sum(1), torch.ones(7, dtype=torch.float64)) < 1e-12
    labels = torch.randint(C, (7, 11), generator=torch.Generator().manual_seed(2)).to(device)
    assert max_err(sampler.log_prob(z, labels), lqa.gather(1, labels)) < 1e-12


@pytest.mark.parametrize("C", [1, 2, 3, 37, 64, 1000, 1025])
def test_log_prob_all_aten_version(C):
    """The ATen version of tree_log_prob_all (CompositeExplicitAutograd: what CUDA runs; called here on the CPU by
    redispatch): float64 equals the reference walk, padding nodes (a suffix of each level, filled in place) give
    exactly 0 and -inf, a logit of -21 keeps its log1p tail, inf and NaN logits as the CPU kernel gives them, and
    an empty batch has C columns."""
    op = torch.ops.torchxc.tree_log_prob_all.default
    aten = functools.partial(op.redispatch, torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd))
    sampler = make_tree(C, 5)
    z = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    args = (sampler.node_weight, sampler.node_bias, sampler.label_to_leaf)
    got = aten(z, *args)
    assert max_err(got, reference_log_q(sampler, z)) < 1e-12 and max_err(got, op(z, *args)) < 1e-12
    assert aten(z[:0], *args).shape == (0, C)
    x = torch.tensor([[-21.0], [float("inf")], [float("nan")], [30.0]], dtype=torch.float64)
    one = (torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), torch.arange(2))
    torch.testing.assert_close(aten(x, *one), op(x, *one), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("C,B,k", [(1, 3, 6), (2, 17, 6), (37, 1, 6), (1000, 5, 6), (1000, 70, 6), (3000, 21, 6),
                                   (2049, 36, 6), (1025, 20, 80), (300, 3, 67)])
def test_log_prob_all_cpu_kernel_paths(C, B, k):
    """The CPU kernel of tree_log_prob_all: groups of 16 rows, a last group of 2 to 4 (4 lanes) or 1 row (the lanes
    are a level's nodes), groups in
    parallel (many groups, small trees) or one at a time with its subtrees in parallel, trees deeper than the
    kernel's 10-level tiles (C > 1024: a top part, then subtrees, padding subtrees skipped), and k > 64 (the logits
    from a matrix product). float64 equals the reference walk; float32 is within rounding of it; with k <= 64 a
    row's values do not depend on its batch or the thread count (bitwise)."""
    f64 = make_tree(C, k, seed=C, scale=1.5 / math.sqrt(k / 6))
    z = torch.randn(B, k, dtype=torch.float64, generator=torch.Generator().manual_seed(B))
    ref = reference_log_q(f64, z)
    assert max_err(f64.log_prob_all(z), ref) < 1e-12
    f32 = torchxc.TreeSampler.from_parameters(f64.node_weight.float(), f64.node_bias.float(), C, f64.leaf_to_label)
    z32 = z.float()
    with num_threads(4):
        la = f32.log_prob_all(z32)
    assert la.dtype == torch.float32 and max_err(la, ref) < 2e-6 * (1 + ref.abs().max().item())
    same = torch.equal if k <= 64 else (lambda a, b: max_err(a, b) < 1e-6 * (1 + ref.abs().max().item()))
    with num_threads(1):
        assert same(f32.log_prob_all(z32), la)
    for i in {0, B // 2, B - 1}:
        assert same(f32.log_prob_all(z32[i:i + 1])[0], la[i])
    assert f32.log_prob_all(z32[:0]).shape == (0, C)


def test_log_prob_all_float32_log_sigmoid_tails():
    """float32 log sigmoid over the whole range of logits (the kernel's own e^-|x| and log1p): within a few ulp of the
    float64 values down to 1e-37, tiny tails kept (log sigmoid(30) = -9.4e-14, not 0), an inf logit gives 0 and
    -inf, a NaN logit NaN. One node of weight 1: the logit of row i is x[i]."""
    x = torch.cat([torch.linspace(-120, 120, 4001), torch.tensor([0.0, 1e-30, -1e-30, 30.0, 88.0, -88.0])])
    got = torchxc.TreeSampler.from_parameters(torch.ones(1, 1), torch.zeros(1), 2).log_prob_all(x[:, None])
    one64 = torch.ones(1, 1, dtype=torch.float64)
    want = torchxc.TreeSampler.from_parameters(one64, torch.zeros(1, dtype=torch.float64), 2).log_prob_all(
        x[:, None].double())
    got = got.double()
    normal = want.abs() > 1e-37  # below, at float32's smallest normals (1.2e-38), e^-|x| flushes to 0
    assert ((got - want).abs() / want.abs())[normal].max() < 4e-7
    assert (got - want)[~normal].abs().max() < 1e-37
    assert got[x == 30].abs().min() > 0
    special = torch.tensor([[float("inf")], [float("nan")]])
    out = torchxc.TreeSampler.from_parameters(torch.ones(1, 1), torch.zeros(1), 2).log_prob_all(special)
    assert out[0].tolist() == [-float("inf"), 0.0] and out[1].isnan().all()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("C", [37, 1000])
def test_sample_frequencies_match_log_prob_all(device, C):
    # chi-square goodness of fit of many draws against exp(log_prob_all), per row (C is not a power of two)
    sampler = make_tree(C, 4, dtype=torch.float32, device=device, seed=C)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(3)).to(device)
    n = 400_000
    labels, log_q = sampler.sample(z, n, generator=torch.Generator().manual_seed(4))
    probs = sampler.log_prob_all(z).double().exp().cpu()
    for row in range(3):
        assert chi2_pvalue(torch.bincount(labels[row].cpu(), minlength=C), probs[row]) > 1e-4
    # padding leaves are never drawn
    assert labels.min() >= 0 and labels.max() < C


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_sampled_log_q_is_log_prob(device, dtype):
    sampler = make_tree(1000, 8, dtype=dtype, device=device)
    z = torch.randn(9, 8, generator=torch.Generator().manual_seed(5)).to(device, dtype)
    labels, log_q = sampler.sample(z, 50, generator=torch.Generator().manual_seed(6))
    assert labels.dtype == torch.long and log_q.dtype == dtype
    assert max_err(sampler.log_prob(z, labels), log_q) < (1e-12 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("C,k,S", [(3, 33, 500), (5, 8, 2000), (37, 5, 1000), (1000, 16, 7), (70000, 32, 3)])
def test_sampled_log_q_is_log_prob_shapes(device, C, k, S):
    """float32 draws over k with and without an 8-wide tail, rows straddling the kernel's blocks of walks, few and
    many draws per row (upper levels shared or not), padded trees: log q of every draw is log_prob of its label."""
    sampler = make_tree(C, k, dtype=torch.float32, device=device, scale=1.5 / math.sqrt(k))
    z = torch.randn(13, k, generator=torch.Generator().manual_seed(C)).to(device)
    labels, log_q = sampler.sample(z, S, generator=torch.Generator().manual_seed(2))
    assert labels.shape == (13, S) and labels.min() >= 0 and labels.max() < C
    assert max_err(float64_copy(sampler).log_prob(z.double(), labels), log_q) < 1e-5


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_nan_input_gives_nan_log_q(device, dtype):
    sampler = make_tree(100, 8, dtype=dtype, device=device)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(3)).to(device, dtype)
    z[2, 5] = float("nan")
    labels, log_q = sampler.sample(z, 40, generator=torch.Generator().manual_seed(4))
    assert labels.min() >= 0 and labels.max() < 100
    assert log_q[2].isnan().all() and log_q[[0, 1, 3]].isfinite().all()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_seeded_draws_are_reproducible(device):
    sampler = make_tree(500, 6, dtype=torch.float32, device=device)
    z = torch.randn(64, 6, generator=torch.Generator().manual_seed(7)).to(device)
    a = sampler.sample(z, 32, generator=torch.Generator().manual_seed(8))
    b = sampler.sample(z, 32, generator=torch.Generator().manual_seed(8))
    c = sampler.sample(z, 48, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(c[0][:, :32], a[0])  # draw s of row b does not depend on how many draws the call makes
    torch.manual_seed(9)
    d = sampler.sample(z, 32)
    torch.manual_seed(9)
    assert torch.equal(sampler.sample(z, 32)[0], d[0])  # the default generator seeds it
    assert not torch.equal(sampler.sample(z, 32)[0], d[0])
    if device.type == "cpu":
        with num_threads(1):
            e = sampler.sample(z, 32, generator=torch.Generator().manual_seed(8))
        assert torch.equal(e[0], a[0])


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_float32_draws_equal_float64_draws(device):
    """The float32 kernels (vectorized random numbers, shared upper levels) use the same uniform per (seed, row, draw,
    level) as the float64 walk: on a tree whose float32 and float64 parameters are equal, the draws agree except
    where a uniform falls within rounding of a branch probability (none for this seed). The 1.1M level steps here
    leave about 17 choices to the refinement (2^-16 each, tree_take_unlikely), which both walks must settle alike.
    On CUDA the float32 logits round differently (FMA chains, expf), so a flip or two stays possible there (about
    0.05 expected for these 111,000 draws); each flipped draw must still carry its own label's log q."""
    f32 = make_tree(1000, 16, dtype=torch.float32, scale=0.4)
    f64 = float64_copy(f32)
    z = torch.randn(37, 16, generator=torch.Generator().manual_seed(11))
    a = f32.to(device).sample(z.to(device), 3000, generator=torch.Generator().manual_seed(12))
    b = f64.to(device).sample(z.double().to(device), 3000, generator=torch.Generator().manual_seed(12))
    same = a[0] == b[0]
    if device.type == "cpu":
        assert same.all()
    else:
        assert (~same).sum() <= 2
        rows = (~same).nonzero()[:, 0]
        for s, o, zz in ((f32, a, z), (f64, b, z.double())):
            lp = s.to(device).log_prob(zz.to(device)[rows], o[0][~same].unsqueeze(1)).squeeze(1)
            assert max_err(lp.double(), o[1][~same].double()) < 1e-5
    assert max_err(a[1][same], b[1][same]) < 1e-5


def assert_kernel_switch_keeps_draws(env_var, k):
    """Draws of a float32 tree (C = 1000, k inputs) with and without the kernel switch env_var agree: same Philox
    words, logits equal up to summation order (a flip needs a uniform within rounding of a branch probability)."""
    code = (
        "import sys, torch, torchxc; sys.path.insert(0, sys.argv[1]); from test_tree_sampler import make_tree\n"
        f"s = make_tree(1000, {k}, dtype=torch.float32, scale=0.4)\n"
        f"z = torch.randn(37, {k}, generator=torch.Generator().manual_seed(11))\n"
        "lab, lq = s.sample(z, 300, generator=torch.Generator().manual_seed(12))\n"
        "torch.save((lab, lq), sys.argv[2])\n")
    outs = outputs_without_and_with(env_var, code, os.path.dirname(os.path.abspath(__file__)))
    assert (outs[0][0] != outs[1][0]).float().mean() < 1e-3
    same = outs[0][0] == outs[1][0]
    assert max_err(outs[0][1][same], outs[1][1][same]) < 1e-5


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="the AVX2 loops need an x86 CPU with AVX2")
def test_portable_cpu_loops_match_avx2():
    """The sampler's portable loops (CPUs without AVX2; forced here by TORCHXC_TREE_NO_AVX2) draw what the vector
    loops (AVX2, or AVX-512 where the CPU has it) draw."""
    assert_kernel_switch_keeps_draws("TORCHXC_TREE_NO_AVX2", 12)


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512",
                    reason="the AVX-512 loops need an x86 CPU with AVX-512")
@pytest.mark.parametrize("k", [12, 16, 40])
def test_avx2_loops_match_avx512(k):
    """The AVX-512 dot products (k > 8) and Philox (TORCHXC_TREE_NO_AVX512 keeps the AVX2 ones) draw what the AVX2
    loops draw, for k below, at and above one 16-lane vector."""
    assert_kernel_switch_keeps_draws("TORCHXC_TREE_NO_AVX512", k)


@requires_cuda
def test_cuda_draws_equal_cpu_draws():
    sampler = make_tree(300, 4, dtype=torch.float64)
    z = torch.randn(16, 4, dtype=torch.float64)
    a = sampler.sample(z, 20, generator=torch.Generator().manual_seed(1))
    b = sampler.to("cuda").sample(z.cuda(), 20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0].cpu())


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_gradcheck_log_prob(device):
    for C in (2, 13):
        sampler = make_tree(C, 3, device=device, seed=C)
        z = torch.randn(4, 3, dtype=torch.float64, device=device, requires_grad=True)
        labels = torch.randint(C, (4, 5), generator=torch.Generator().manual_seed(C)).to(device)
        W = sampler.node_weight.detach().clone().requires_grad_(True)
        b = sampler.node_bias.detach().clone().requires_grad_(True)
        f = lambda z_, W_, b_: torch.ops.torchxc.tree_log_prob(z_, W_, b_, sampler.label_to_leaf, labels)
        assert torch.autograd.gradcheck(f, (z, W, b))
    # through the module: the parameters get gradients
    sampler = make_tree(40, 3, device=device)
    sampler.log_prob(torch.randn(2, 3, dtype=torch.float64, device=device), torch.tensor([[1, 5], [39, 0]],
                                                                                          device=device)).sum().backward()
    assert sampler.node_weight.grad is not None and sampler.node_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_opcheck(device):
    sampler = make_tree(37, 4, dtype=torch.float32, device=device)
    z = torch.randn(5, 4, device=device)
    W, b = sampler.node_weight.detach(), sampler.node_bias.detach()
    labels = torch.randint(37, (5, 3)).to(device)
    torch.library.opcheck(torch.ops.torchxc.tree_sample.default, (z, W, b, sampler.leaf_to_label, 37, 6, 123))
    for rg in (False, True):
        torch.library.opcheck(torch.ops.torchxc.tree_log_prob.default,
                              (z.clone().requires_grad_(rg), W.clone().requires_grad_(rg), b, sampler.label_to_leaf,
                               labels))
    torch.library.opcheck(torch.ops.torchxc.tree_log_prob_all.default, (z, W, b, sampler.label_to_leaf))
    torch.library.opcheck(torch.ops.torchxc.tree_log_prob_backward.default,
                          (torch.randn(5, 3, device=device), z, W, b, sampler.label_to_leaf, labels))


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    sampler = make_tree(100, 4, dtype=torch.float32, device=device)
    x = torch.randn(8, 4, device=device)
    y = torch.randint(100, (8, 2)).to(device)
    f = torch.compile(lambda x_, y_: sampler.log_prob(x_, y_).sum(), fullgraph=True)
    assert max_err(f(x, y), sampler.log_prob(x, y).sum()) < 1e-4


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_torch_compile_fullgraph_every_op(device):
    """tree_sample (a fixed seed: TreeSampler.sample draws its seed on the host), tree_log_prob with its backward,
    and tree_log_prob_all in one compiled graph give the eager draws, values and node-weight gradients."""
    torch._dynamo.reset()
    sampler = make_tree(100, 4, dtype=torch.float32, device=device)
    b, l2l, lab2leaf = sampler.node_bias.detach(), sampler.leaf_to_label, sampler.label_to_leaf
    z = torch.randn(8, 4, device=device)

    def f(z_, W_):
        labels, log_q = torch.ops.torchxc.tree_sample(z_, W_.detach(), b, l2l, 100, 5, 123)
        lp = torch.ops.torchxc.tree_log_prob(z_, W_, b, lab2leaf, labels)
        la = torch.ops.torchxc.tree_log_prob_all(z_, W_.detach(), b, lab2leaf)
        return labels, log_q, la, (lp * torch.arange(5, device=z_.device)).sum()

    W = sampler.node_weight.detach().clone().requires_grad_(True)
    labels, log_q, la, loss = f(z, W)
    (gW,) = torch.autograd.grad(loss, W)
    c_labels, c_log_q, c_la, c_loss = torch.compile(f, fullgraph=True)(z, W)
    (c_gW,) = torch.autograd.grad(c_loss, W)
    assert torch.equal(labels, c_labels) and torch.equal(log_q, c_log_q)
    assert max_err(la, c_la) < 1e-5 and max_err(loss, c_loss) < 1e-4 and max_err(gW, c_gW) < 1e-5
    assert gW.abs().sum() > 0


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_bad_input_errors(device):
    sampler = make_tree(37, 4, dtype=torch.float32, device=device)
    z = torch.randn(5, 4, device=device)
    W, b, l2l = sampler.node_weight.detach(), sampler.node_bias.detach(), sampler.leaf_to_label
    with pytest.raises(RuntimeError, match=r"tree_sample: expected node_weight of shape \[63, 4\]"):
        torch.ops.torchxc.tree_sample(z, W[:10], b, l2l, 37, 3, 0)
    with pytest.raises(RuntimeError, match=r"expected node_weight of shape \[63, 3\]"):
        torch.ops.torchxc.tree_sample(z[:, :3], W, b, l2l, 37, 3, 0)  # k mismatch
    with pytest.raises(RuntimeError, match=r"expected node_weight of shape \[31, 4\]"):
        torch.ops.torchxc.tree_sample(z, W, b, l2l, 20, 3, 0)  # a tree for another C
    with pytest.raises(RuntimeError, match=r"expected leaf_to_label int64 of shape \[64\]"):
        torch.ops.torchxc.tree_sample(z, W, b, l2l[:10], 37, 3, 0)
    with pytest.raises(RuntimeError, match="expected z of dtype float32 or float64"):
        torch.ops.torchxc.tree_sample(z.half(), W, b, l2l, 37, 3, 0)
    with pytest.raises(RuntimeError, match=r"expected labels int64 of shape \[5, P\], but got Long \[4, 2\]"):
        sampler.log_prob(z, torch.zeros(4, 2, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="leaf_to_label must have 64 entries"):
        torchxc.TreeSampler.from_parameters(W, b, 37, torch.zeros(64, dtype=torch.long))
    # a mean of another width broadcast silently (a [1] mean shifted every feature by one number)
    with pytest.raises(ValueError, match=r"mean must be \[F = 4\] \(the node width k, as there is no projection\), "
                                         r"got \(1,\)"):
        torchxc.TreeSampler.from_parameters(W, b, 37, mean=torch.zeros(1))
    with pytest.raises(ValueError, match=r"mean must be \[F = 6\] \(the projection's input width\), got \(4,\)"):
        torchxc.TreeSampler.from_parameters(W, b, 37, projection=torch.zeros(6, 4), mean=torch.zeros(4))
    with pytest.raises(ValueError, match="pass a CPU torch.Generator"):
        sampler.sample(z, 2, generator=types.SimpleNamespace(device=torch.device("cuda")))  # a CUDA generator


def test_bad_labels_cpu():
    sampler = make_tree(37, 4, dtype=torch.float32)
    z = torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="label 37 is out of range for 37 labels"):
        sampler.log_prob(z, torch.tensor([[0], [37]]))
    with pytest.raises(RuntimeError, match="label -1 is out of range"):
        sampler.log_prob(z, torch.tensor([[0], [-1]]))


# ---- fitting ---------------------------------------------------------------------------------------------------


def clustered_data(C, F, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, F, generator=g) * 2
    y = torch.randint(C, (N,), generator=g)
    return centers[y] + torch.randn(N, F, generator=g), y


@pytest.mark.parametrize("label_form", ["index", "padded", "csr"])
def test_fit_learns_the_data(label_form):
    C, F, N = 300, 32, 20000
    x, y = clustered_data(C, F, N)
    if label_form == "index":
        labels = y
    elif label_form == "padded":  # one positive per example, padded to 3 columns
        labels = torch.full((N, 3), -1)
        labels[:, 1] = y
    else:
        labels = (torch.arange(N + 1), y)
    sampler = torchxc.TreeSampler.fit(x, labels, C, dim=8, progress=False)
    assert sampler.node_weight.shape == (511, 8) and sampler.projection.shape == (F, 8)
    assert torch.equal(sampler.leaf_to_label[:C].sort().values, torch.arange(C))
    assert (sampler.leaf_to_label[C:] == -1).all()
    lq = sampler.log_prob(x[:2000], y[:2000, None]).mean().item()
    assert lq > -math.log(C) + 3  # far better than uniform: the true label gets e^3 = 20x its share
    assert max_err(sampler.log_prob_all(x[:4]).exp().sum(1), torch.ones(4)) < 1e-4


def _newton_reference(z, offsets, theta, target, reg, steps, max_step):
    """TreeSampler.fit's Newton steps in float64, one node at a time: logistic regression of target on (z, 1) with
    penalty reg, trust-region steps of norm at most max_step. Returns (theta, margins under it)."""
    z, theta, target, reg = z.double(), theta.double(), target.double(), reg.double()
    x = torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], 1)
    for _ in range(steps):
        new = theta.clone()
        for n in range(len(theta)):
            xn, tn = x[offsets[n]:offsets[n + 1]], target[offsets[n]:offsets[n + 1]]
            p = torch.sigmoid(xn @ theta[n])
            g = reg * theta[n] + xn.T @ (p - tn)
            h = torch.diag(reg) + xn.T @ ((p * (1 - p))[:, None] * xn)
            step = torch.linalg.solve(h, g)
            new[n] = theta[n] - step * (max_step / max(step.norm().item(), max_step))
        theta = new
    node = torch.repeat_interleave(torch.arange(len(theta)), offsets[1:] - offsets[:-1])
    return theta, (x * theta[node]).sum(1)


def _scale(t):
    return 1 + (t.abs().max().item() if t.numel() else 0.0)


# (examples per node, k): empty nodes, a node across many of the kernel's chunks (4096 examples), k = 0 (bias only)
@pytest.mark.parametrize("counts,k", [([3, 0, 5, 1], 2), ([9000], 4), ([0, 5000, 0, 4000, 7], 16), ([40, 2], 0),
                                      ([0, 0, 0], 3), ([5] * 300 + [0] * 20 + [4100], 9)])
def test_fit_newton_kernel_matches_float64_reference(counts, k):
    """The CPU kernel behind TreeSampler.fit (torchxc::tree_fit_newton) against Newton steps written out per node
    in float64, and against the ATen solver that other devices use; its result does not depend on the thread
    count (fixed chunks, partial sums added in chunk order)."""
    from torchxc.sampling import _NodeLogistic

    g = torch.Generator().manual_seed(len(counts) + k)
    offsets = torch.tensor([0] + counts).cumsum(0)
    E, n = int(offsets[-1]), len(counts)
    z = torch.randn(E, k, generator=g) * 2
    target = (torch.rand(E, generator=g) < 0.4).float()
    theta = torch.randn(n, k + 1, generator=g)
    reg = torch.full((k + 1,), 0.5)
    reg[-1] = 1e-3
    ops = torch.ops.torchxc
    for steps, max_step in ((0, 4.0), (1, 4.0), (3, 4.0), (2, 0.25)):
        th, margins = ops.tree_fit_newton(z, offsets, theta, target, reg, steps, max_step)
        ref_th, ref_m = _newton_reference(z, offsets, theta, target, reg, steps, max_step)
        assert th.dtype == margins.dtype == torch.float32 and margins.shape == (E,)
        assert max_err(th, ref_th) < 1e-5 * _scale(ref_th) and max_err(margins, ref_m) < 1e-5 * _scale(ref_m)
        with num_threads(1):
            th1, margins1 = ops.tree_fit_newton(z, offsets, theta, target, reg, steps, max_step)
        assert torch.equal(th1, th) and torch.equal(margins1, margins)
    # the ATen path of _NodeLogistic (examples given unsorted, with their nodes) agrees
    node = torch.repeat_interleave(torch.arange(n), offsets[1:] - offsets[:-1])
    perm = torch.randperm(E, generator=g)
    aten = _NodeLogistic(z[perm], node[perm], n, 0.5, fused=False)
    fused = _NodeLogistic(z[perm], node[perm], n, 0.5)
    assert fused.fused and not aten.fused and torch.equal(aten.order, fused.order)
    t = target[perm][aten.order]
    (a_th, a_m), (f_th, f_m) = aten.solve(t, theta, 2), fused.solve(t, theta, 2)
    assert max_err(a_th, f_th) < 1e-4 * _scale(f_th) and max_err(a_m, f_m) < 1e-4 * _scale(f_m)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(allow_nan=False, width=32)), min_size=1, max_size=60))
def test_fit_reassignment_key_sorts_like_node_then_score(pairs):
    """TreeSampler.fit orders labels by node, then score, with one integer sort of _node_score_key: the same order
    as a stable float sort by score followed by a stable sort by node (ties, -0.0 against 0.0, infinities)."""
    from torchxc.sampling import _node_score_key

    node = torch.tensor([p[0] for p in pairs])
    score = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
    order = torch.argsort(score, stable=True)
    want = order[torch.argsort(node[order], stable=True)]
    assert torch.equal(torch.argsort(_node_score_key(node, score), stable=True), want)


def test_fit_newton_kernel_checks_opcheck_and_compile():
    ops = torch.ops.torchxc
    z, off, th, t, reg = torch.randn(6, 2), torch.tensor([0, 2, 2, 6]), torch.zeros(3, 3), torch.ones(6), torch.ones(3)
    torch.library.opcheck(ops.tree_fit_newton.default, (z, off, th, t, reg, 2, 4.0))
    # not differentiable: outputs that never require grad, also from inputs that do
    outs = ops.tree_fit_newton(z.requires_grad_(), off, th.requires_grad_(), t, reg, 1, 4.0)
    assert not any(o.requires_grad for o in outs)
    z, th = z.detach(), th.detach()
    compiled = torch.compile(lambda *a: ops.tree_fit_newton(*a, 2, 4.0), fullgraph=True)
    for got, want in zip(compiled(z, off, th, t, reg), ops.tree_fit_newton(z, off, th, t, reg, 2, 4.0)):
        assert torch.equal(got, want)
    name = "torchxc::tree_fit_newton"
    for args, what in [((z.double(), off, th, t, reg), "z"), ((z, off, th[:, :2], t, reg), "theta"),
                       ((z, off[:3], th, t, reg), "offsets"), ((z, off.int(), th, t, reg), "offsets"),
                       ((z, off, th, t[:5], reg), "target"), ((z, off, th, t, reg[:2]), "reg")]:
        with pytest.raises(RuntimeError, match=f"{name}: expected {what}"):
            ops.tree_fit_newton(*args, 1, 4.0)
    ends = "must start at 0 and end at E = 6, got"
    for bad_off, what in [([0, 3, 2, 6], "must not decrease"), ([0, 2, 2, 5], f"{ends} 0 and 5"),
                          ([1, 2, 2, 6], f"{ends} 1 and 6")]:
        with pytest.raises(RuntimeError, match=f"{name}: offsets {what}"):
            ops.tree_fit_newton(z, torch.tensor(bad_off), th, t, reg, 1, 4.0)
    with pytest.raises(RuntimeError, match=f"{name}: reg must be positive"):
        ops.tree_fit_newton(z, off, th, t, torch.tensor([1.0, 0.0, 1.0]), 1, 4.0)
    with pytest.raises(RuntimeError, match=f"{name}: steps must be >= 0"):
        ops.tree_fit_newton(z, off, th, t, reg, -1, 4.0)
    with pytest.raises(RuntimeError, match=f"{name}: max_step must be positive"):
        ops.tree_fit_newton(z, off, th, t, reg, 1, 0.0)


def test_fit_multilabel_and_tiny_cases():
    x, y = clustered_data(5, 4, 500, seed=1)
    multi = torch.stack([y, (y + 1) % 5], 1)  # two positives per example
    s = torchxc.TreeSampler.fit(x, multi, 5, dim=2, progress=False)
    assert s.log_prob(x[:10], multi[:10]).shape == (10, 2)
    one = torchxc.TreeSampler.fit(x, torch.zeros(500, dtype=torch.long), 1, dim=2, progress=False)
    labels, log_q = one.sample(x[:3], 4)
    assert (labels == 0).all() and (log_q == 0).all()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        torchxc.TreeSampler.fit(x, y + 1, 5, progress=False)


def test_fit_label_forms_agree_and_bad_labels_are_named():
    x, y = clustered_data(5, 4, 60, seed=2)
    multi = torch.stack([y, (y + 2) % 5], 1)
    multi[::3, 1] = -1
    keep = multi >= 0
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), keep.sum(1).cumsum(0)])
    indices = multi[keep]
    dense = torch.zeros(60, 5)
    dense[torch.arange(60).repeat_interleave(keep.sum(1)), indices] = 1.0
    fits = [torchxc.TreeSampler.fit(x, labels, 5, dim=2, progress=False)
            for labels in (multi, (indptr, indices), (indptr.numpy(), indices.numpy()), dense.to_sparse_csr())]
    for s in fits[1:]:  # the same pairs (a sparse matrix orders each row's labels, so sums may round differently)
        assert torch.equal(s.leaf_to_label, fits[0].leaf_to_label)
        assert max_err(s.node_weight, fits[0].node_weight) < 1e-4 and max_err(s.node_bias, fits[0].node_bias) < 1e-4
    bad = [
        (y[:40], r"expected labels \[N = 60\]"),
        (multi[:30], r"expected labels \[N = 60\] or \[N = 60, P\]"),
        (y.float() + 0.7, "expected integer labels"),
        (multi - 2, r"padded labels must lie in \[0, 5\) or be -1"),
        ((indptr[:-1], indices), r"expected CSR indptr \[N \+ 1 = 61\]"),
        ((indptr, indices[:-1]), "CSR indptr must start at 0, not decrease and end at len"),
        ((indptr.flip(0), indices), "CSR indptr must start at 0"),
        (dense[:50].to_sparse_csr(), r"expected a sparse CSR label matrix \[N = 60, C\]"),
        # a label twice in one example, in each multi-label form; a multi-hot matrix given as padded labels
        (torch.cat([multi, y[:, None]], 1), r"example 0 lists label \d more than once"),
        ((torch.tensor([0, 2] + [2] * 59), torch.tensor([3, 3])), "example 0 lists label 3 more than once"),
        (dense.long(), "example 0 lists label 0 more than once .an \\[N, C\\] multi-hot matrix is not a list"),
    ]
    for labels, msg in bad:
        with pytest.raises(ValueError, match="TreeSampler.fit: " + msg):
            torchxc.TreeSampler.fit(x, labels, 5, dim=2, progress=False)
    for kwargs, msg in (({"l2": 0.0}, "l2 must be positive"), ({"l2": -1.0}, "l2 must be positive"),
                        ({"dim": 0}, "must be >= 1"), ({"iterations": 0}, "must be >= 1")):
        with pytest.raises(ValueError, match=msg):
            torchxc.TreeSampler.fit(x, y, 5, progress=False, **kwargs)
    with pytest.raises(ValueError, match="needs at least one example"):
        torchxc.TreeSampler.fit(x[:0], y[:0], 5, progress=False)
    nan_x = x.clone()
    nan_x[7, 1] = math.nan
    with pytest.raises(ValueError, match="TreeSampler.fit: features must be finite, but row 7"):
        torchxc.TreeSampler.fit(nan_x, y, 5, dim=2, progress=False)
    with pytest.raises(ValueError, match="TreeSampler.fit: expected dense features, got layout torch.sparse_csr"):
        torchxc.TreeSampler.fit(x.to_sparse_csr(), y, 5, dim=2, progress=False)


def test_fit_whitening_ignores_scale_and_missing_directions():
    # 32 features spanned by 4 directions, fitted with dim = 16: the 12 empty directions must not get huge
    # projection columns (they would amplify noise in new inputs), and the features' overall scale must not matter
    g = torch.Generator().manual_seed(3)
    C, N = 20, 4000
    centers = torch.randn(C, 4, generator=g) * 2
    y = torch.randint(C, (N,), generator=g)
    basis = torch.linalg.qr(torch.randn(32, 4, generator=g, dtype=torch.float64))[0].float()
    x = (centers[y] + torch.randn(N, 4, generator=g)) @ basis.t()
    s = torchxc.TreeSampler.fit(x, y, C, dim=16, progress=False)
    noisy = x[:1000] + 1e-3 * torch.randn(1000, 32, generator=g)
    clean_lq = s.log_prob(x[:1000], y[:1000, None]).mean().item()
    assert clean_lq > -math.log(C) + 1
    assert abs(s.log_prob(noisy, y[:1000, None]).mean().item() - clean_lq) < 0.05
    for scale in (1e-8, 1e6):
        t = torchxc.TreeSampler.fit(x * scale, y, C, dim=16, progress=False)
        assert abs(t.log_prob(x[:1000] * scale, y[:1000, None]).mean().item() - clean_lq) < 0.05
    # full rank, one direction 10x wider than the rest, many examples: every direction is kept (a cut-off growing
    # with N dropped 15 of 16 at N = 1e6)
    wide = torch.randn(1_000_000, 32, generator=g)
    wide[:, 0] *= 10
    t = torchxc.TreeSampler.fit(wide, torch.zeros(1_000_000, dtype=torch.long), 2, dim=16, progress=False)
    assert (t.projection.abs().sum(0) > 0).all()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_default_label_maps_live_with_the_nodes(device):
    s = torchxc.TreeSampler.from_parameters(torch.randn(7, 3, device=device), torch.zeros(7, device=device), 6)
    assert s.leaf_to_label.device == s.node_weight.device and s.label_to_leaf.device == s.node_weight.device
    labels, log_q = s.sample(torch.randn(2, 3, device=device), 4)
    assert labels.device == log_q.device == s.node_weight.device


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_HUGEPAGE"), reason="huge-page advice is Linux-only")
def test_large_cpu_trees_live_in_huge_page_memory():
    """Node parameters and leaf maps of >= 1 MiB are copied into 2 MiB-aligned memory advised for huge pages (the
    walks read them at random); the copies behave like ordinary tensors: equal values, own storage, trainable in
    place, state_dict / torch.save / deepcopy round trips. Small trees get ordinary clones."""
    import copy
    import io
    C, k = 2 ** 17, 16
    W, b = torch.randn(C - 1, k), torch.randn(C - 1)
    s = torchxc.TreeSampler.from_parameters(W, b, C)
    for t in (s.node_weight, s.leaf_to_label, s.label_to_leaf):  # 8 MiB, 1 MiB, 1 MiB
        assert t.data_ptr() % (1 << 21) == 0 and t.is_contiguous()
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()  # checkpoints hold no padding
    assert s.node_bias.untyped_storage().nbytes() == 4 * (C - 1)  # 512 KiB: an ordinary clone
    assert torch.equal(s.node_weight, W) and torch.equal(s.node_bias, b)
    assert s.node_weight.data_ptr() != W.data_ptr() and s.node_weight.requires_grad
    z = torch.randn(5, k)
    y = torch.randint(C, (5, 3))
    ref = torchxc.TreeSampler.from_parameters(W.clone(), b.clone(), C)
    opt, opt_ref = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (s, ref))
    for m, o in ((s, opt), (ref, opt_ref)):
        m.log_prob(z, y).sum().backward()
        o.step()
    assert s.node_weight.data_ptr() % (1 << 21) == 0 and torch.equal(s.node_weight, ref.node_weight)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    fresh = torchxc.TreeSampler.from_parameters(torch.zeros(C - 1, k), torch.zeros(C - 1), C)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    clone = copy.deepcopy(s)
    for m in (fresh, clone):
        assert torch.equal(m.node_weight, s.node_weight) and torch.equal(m.log_prob(z, y), s.log_prob(z, y))
    torch.manual_seed(3)
    draws = s.sample(z, 7)
    torch.manual_seed(3)
    assert all(torch.equal(a, c) for a, c in zip(draws, ref.sample(z, 7)))
    small = torchxc.TreeSampler.from_parameters(torch.randn(7, 3), torch.randn(7), 8)
    assert small.node_weight.untyped_storage().nbytes() == 7 * 3 * 4

def test_raw_ops_refuse_label_maps_outside_the_labels():
    z, W, b = torch.randn(2, 3), torch.randn(7, 3), torch.zeros(7)
    padding_leaf = torch.tensor([0, 1, 2, 3, 5])  # label 4 on leaf 5, a padding leaf of a 5-label tree
    with pytest.raises(RuntimeError, match=r"label_to_leaf\[4\] = 5 is not the leaf of a label"):
        torch.ops.torchxc.tree_log_prob(z, W, b, padding_leaf, torch.tensor([[4], [0]]))
    for bad in (padding_leaf, torch.zeros(5, dtype=torch.long)):
        with pytest.raises(RuntimeError, match="tree_log_prob_all: label_to_leaf must be a permutation"):
            torch.ops.torchxc.tree_log_prob_all(z, W, b, bad)
    with pytest.raises(RuntimeError, match=r"tree_sample: expected 0 <= num_samples <= 2\^32"):
        torch.ops.torchxc.tree_sample(z, W, b, torch.arange(8), 8, 2 ** 32 + 1, 0)  # sample indices would repeat
    leaf_to_label = torch.tensor([0, -1, 2, 99, 2 ** 40, 5, 6, 7])  # leaves below C = 5 hold -1, 99, 2^40
    for dtype in (torch.float32, torch.float64):
        with pytest.raises(RuntimeError, match=r"tree_sample: leaf_to_label maps a leaf below C = 5 to a label"):
            torch.ops.torchxc.tree_sample(z.to(dtype), W.to(dtype), b.to(dtype), leaf_to_label, 5, 100, 0)


@requires_cuda
def test_cuda_device_asserts_on_bad_maps_and_indices():
    """The CUDA kernels' device-side asserts (a failed assert breaks the process's CUDA context: one subprocess each)."""
    import subprocess
    import sys

    cases = {
        "leaf_to_label maps a leaf below C": "torch.ops.torchxc.tree_sample(z, W, b, "
        "torch.tensor([0, -1, 2, 99, 7, 5, 6, 7], device='cuda'), 5, 100, 0)",
        "not a label's leaf": "torch.ops.torchxc.tree_log_prob(z, W, b, torch.tensor([0, 1, 2, 3, 5], device='cuda'), "
        "torch.tensor([[4]] * 3, device='cuda'))",
        "label_to_leaf must be a permutation": "torch.ops.torchxc.tree_log_prob_all(z, W, b, "
        "torch.zeros(5, dtype=torch.long, device='cuda'))",
        "class index out of range": "torch.ops.torchxc.sparsemax_loss_backward(torch.ones(3, device='cuda'), z, "
        "torch.tensor([0, 9, 2], device='cuda'), torch.ops.torchxc.sparsemax_loss(z, torch.tensor([0, 1, 2], "
        "device='cuda'), -100)[1])",
    }
    setup = ("import torch, torchxc; z = torch.randn(3, 3, device='cuda'); W = torch.randn(7, 3, device='cuda'); "
             "b = torch.zeros(7, device='cuda'); ")
    for msg, call in cases.items():
        r = subprocess.run([sys.executable, "-c", setup + call + "; torch.cuda.synchronize()"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode != 0 and (msg in r.stderr or "device-side assert" in r.stderr), (msg, r.stderr[-2000:])


def test_losses_treat_log_q_as_a_constant():
    s = make_tree(37, 4, dtype=torch.float32)
    x = torch.randn(3, 4)
    neg, neg_lq = s.sample(x, 5)
    y = torch.tensor([1, 2, 3])
    pos_lq = s.log_prob(x, y[:, None])[:, 0]
    logits = torch.randn(3, 37, requires_grad=True)
    loss = torchxc.adversarial_negative_sampling_loss(logits.gather(1, y[:, None])[:, 0], logits.gather(1, neg),
                                                      pos_lq, neg_lq, reg=0.1)
    loss = loss + torchxc.sampled_softmax_loss(logits.gather(1, y[:, None])[:, 0], logits.gather(1, neg), neg,
                                               neg_lq, y, pos_log_q=pos_lq)
    loss.backward()
    assert s.node_weight.grad is None and s.node_bias.grad is None  # nothing flows into the tree
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# ---- WeightTree ------------------------------------------------------------------------------------------------


def test_weight_tree_is_a_module():
    """state_dict round trip (the loaded weights decide whether sampling is possible), a parent module's
    checkpoint, and a dtype cast that keeps the exact float64 sums."""
    t = torchxc.WeightTree(torch.tensor([1.0, 0.0, 3.0, 0.5, 2.0]))
    parent = torch.nn.Module()
    parent.freq = t
    assert list(parent.state_dict()) == ["freq.tree", "freq._extra_state"]
    u = torchxc.WeightTree(torch.ones(5))
    u.load_state_dict(t.state_dict())
    assert torch.equal(u.weights, t.weights) and torch.equal(u.log_prob(torch.arange(5)), t.log_prob(torch.arange(5)))
    zero = torchxc.WeightTree(torch.zeros(5))
    u.load_state_dict(zero.state_dict())
    with pytest.raises(ValueError, match="every weight is zero"):
        u.sample(3)
    zero.load_state_dict(t.state_dict())
    assert zero.sample(4).shape == (4,)
    parent.float()
    assert t.tree.dtype == torch.float64 and t.to(torch.float16).tree.dtype == torch.float64
    for other in (9, 7, 6):  # 7 and 6: the same depth, so a buffer of the same size; the label count tells apart
        with pytest.raises(ValueError, match=f"state is a tree of {other} labels, this one has 5"):
            t.load_state_dict(torchxc.WeightTree(torch.ones(other)).state_dict())
    state = t.state_dict()
    state["tree"] = state["tree"].float()
    with pytest.raises(ValueError, match="expected a float64 tree"):
        t.load_state_dict(state, assign=True)
    assert t.tree.dtype == torch.float64 and t.num_labels == 5 and t.sample(100).max() < 5
    import io
    buf = io.BytesIO()
    torch.save(parent.state_dict(), buf)
    buf.seek(0)
    fresh = torchxc.WeightTree(torch.ones(5))
    fresh.load_state_dict({k[len("freq."):]: v for k, v in torch.load(buf).items()})
    assert torch.equal(fresh.weights, t.weights)


@pytest.mark.parametrize("C", [1, 7, 1000])
def test_weight_tree_matches_multinomial(C):
    g = torch.Generator().manual_seed(C)
    w = torch.rand(C, generator=g, dtype=torch.float64) ** 3
    if C > 1:
        w[0] = 0.0  # never drawn
    tree = torchxc.WeightTree(w)
    assert torch.allclose(tree.total, w.sum())
    n = 300_000
    draws = tree.sample(n, generator=g)
    counts = torch.bincount(draws, minlength=C).double()
    if C > 1:
        assert counts[0] == 0
    ref = torch.bincount(torch.multinomial(w, n, replacement=True, generator=g), minlength=C).double()
    p = w / w.sum()
    if C > 1:  # the tree's draws and torch.multinomial's draws both fit p
        assert chi2_pvalue(counts, p) > 1e-4 and chi2_pvalue(ref, p) > 1e-4
    idx = torch.arange(C)
    assert max_err(tree.log_prob(idx), torch.log(p)) < 1e-12


def test_weight_tree_updates():
    w = torch.ones(10, dtype=torch.float64)
    tree = torchxc.WeightTree(w)
    tree.update(torch.tensor([3, 4, 3]), torch.tensor([5.0, 0.0, 7.0]))  # the last value of a repeated index wins
    expected = w.clone()
    expected[3], expected[4] = 7.0, 0.0
    assert torch.equal(tree.weights, expected) and tree.total.item() == expected.sum().item()
    draws = tree.sample(200_000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=10).double()
    assert counts[4] == 0
    assert chi2_pvalue(counts, expected / expected.sum()) > 1e-4
    with pytest.raises(ValueError, match="indices must lie"):
        tree.update(torch.tensor([10]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        tree.update(torch.tensor([1]), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="non-negative weights"):
        torchxc.WeightTree(torch.tensor([1.0, -2.0]))


# ---- losses ------------------------------------------------------------------------------------------------------


def test_adversarial_loss_value_and_optimum():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    plq, nlq = -torch.rand(6, generator=g, dtype=torch.float64), -torch.rand(6, 4, generator=g, dtype=torch.float64)
    sp = torch.nn.functional.softplus
    ref = sp(-pos) + sp(neg).mean(1) + 0.1 * ((pos + plq) ** 2 + ((neg + nlq) ** 2).mean(1))
    out = torchxc.adversarial_negative_sampling_loss(pos, neg, plq, nlq, reg=0.1, reduction="none")
    assert max_err(out, ref) < 1e-12
    # Theorem 1: with positives from p and negatives from q (equal weights), the optimum is xi = log p - log q,
    # so xi + log q = log p up to normalisation. Exact expectations over 5 labels:
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    q = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.3], dtype=torch.float64)
    xi = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([xi], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    lq = torch.log(q)
    far = torch.full((5,), 50.0, dtype=torch.float64)  # softplus(-50) = 2e-22: the other half of a row vanishes

    def closure():
        opt.zero_grad()
        # the op's two halves, each weighted by its distribution: rows whose negative (or positive) logit is far
        # out contribute softplus(-xi_y) (or softplus(xi_y)) only
        pos_half = torchxc.adversarial_negative_sampling_loss(xi, -far[:, None], lq, lq[:, None], reduction="none")
        neg_half = torchxc.adversarial_negative_sampling_loss(far, xi[:, None], lq, lq[:, None], reduction="none")
        loss = (p * pos_half).sum() + (q * neg_half).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert max_err(torch.softmax(torchxc.corrected_logits(xi.detach(), torch.log(q)), 0), p) < 1e-6


def test_adversarial_loss_removes_accidental_hits():
    """A sampled label among the example's positives drops out of the negative term and the regulariser; the mean
    still divides by S."""
    g = torch.Generator().manual_seed(3)
    B, S, C = 7, 5, 6
    pos, neg = torch.randn(B, generator=g, dtype=torch.float64), torch.randn(B, S, generator=g, dtype=torch.float64)
    plq, nlq = -torch.rand(B, generator=g, dtype=torch.float64), -torch.rand(B, S, generator=g, dtype=torch.float64)
    neg_labels = torch.randint(C, (B, S), generator=g)
    positives = torch.tensor([[0, 1, -1], [2, -1, -1], [-1, -1, -1], [3, 3, 4], [5, 0, 1], [1, 2, 3], [4, -1, -1]])
    hit = torch.zeros(B, S, dtype=torch.bool)
    for b in range(B):
        for s_ in range(S):
            hit[b, s_] = int(neg_labels[b, s_]) in positives[b].tolist()
    assert 0 < hit.sum() < B * S  # the seed gives both kinds
    sp = torch.nn.functional.softplus
    keep = (~hit).double()
    ref = sp(-pos) + (keep * sp(neg)).sum(1) / S + 0.1 * ((pos + plq) ** 2 + (keep * (neg + nlq) ** 2).sum(1) / S)
    A = torchxc.adversarial_negative_sampling_loss
    out = A(pos, neg, plq, nlq, reg=0.1, reduction="none", neg_labels=neg_labels, positives=positives)
    assert max_err(out, ref) < 1e-12
    # no hit possible (labels outside every row's positives): the plain loss, bit for bit
    assert torch.equal(A(pos, neg, plq, nlq, reg=0.1, reduction="none", neg_labels=neg_labels + C,
                         positives=positives), A(pos, neg, plq, nlq, reg=0.1, reduction="none"))
    # gradients (hits get none) and an infinite hit: finite loss, finite gradients, no NaN through the square
    pos_, neg_ = pos.clone().requires_grad_(), neg.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: A(a, b, plq, nlq, reg=0.1, neg_labels=neg_labels,
                                                   positives=positives), (pos_, neg_))
    A(pos_, neg_, plq, nlq, reg=0.1, neg_labels=neg_labels, positives=positives).backward()
    assert (neg_.grad[hit] == 0).all() and (neg_.grad[~hit] != 0).all()
    inf_neg = neg.masked_fill(hit, math.inf).requires_grad_()
    loss = A(pos, inf_neg, plq, nlq.masked_fill(hit, -math.inf), reg=0.1, neg_labels=neg_labels, positives=positives)
    loss.backward()
    assert loss.item() == pytest.approx(ref.mean().item(), rel=1e-12) and torch.isfinite(inf_neg.grad).all()
    compiled = torch.compile(A, fullgraph=True)
    assert max_err(compiled(pos, neg, plq, nlq, reg=0.1, reduction="none", neg_labels=neg_labels,
                            positives=positives), ref) < 1e-12
    # bad input: one of the two, other shapes, float or multi-hot positives, labels of another shape
    with pytest.raises(ValueError, match="adversarial_negative_sampling_loss: accidental hits are removed with both "
                                         "neg_labels and positives, got only neg_labels"):
        A(pos, neg, plq, nlq, neg_labels=neg_labels)
    with pytest.raises(ValueError, match="got only positives"):
        A(pos, neg, plq, nlq, positives=positives)
    with pytest.raises(ValueError, match=r"adversarial_negative_sampling_loss: expected neg_labels of neg_logits' "
                                         r"shape \(7, 5\), got \(7, 4\)"):
        A(pos, neg, plq, nlq, neg_labels=neg_labels[:, :4], positives=positives)
    with pytest.raises(ValueError, match=r"adversarial_negative_sampling_loss: expected positives int64 \[B = 7, P\]"):
        A(pos, neg, plq, nlq, neg_labels=neg_labels, positives=positives[:3])
    with pytest.raises(ValueError, match="adversarial_negative_sampling_loss: expected positives of an integer dtype"):
        A(pos, neg, plq, nlq, neg_labels=neg_labels, positives=positives.double())
    with pytest.raises(ValueError, match="adversarial_negative_sampling_loss: positives holds only 0s and 1s"):
        A(pos, neg, plq, nlq, neg_labels=neg_labels, positives=torch.zeros(B, C, dtype=torch.long))
    with pytest.raises(TypeError, match="adversarial_negative_sampling_loss: neg_labels must be a tensor"):
        A(pos, neg, plq, nlq, neg_labels=neg_labels.tolist(), positives=positives)
    with pytest.raises(ValueError, match=r"adversarial_negative_sampling_loss: expected neg_labels of neg_logits' "
                                         r"shape \(7, 5\), got \(35,\)"):
        A(pos, neg, plq, nlq, neg_labels=neg_labels.flatten(), positives=positives)
    with pytest.raises(ValueError, match="adversarial_negative_sampling_loss: expected positives on the logits' "
                                         "device cpu, got meta"):
        A(pos, neg, plq, nlq, neg_labels=neg_labels, positives=positives.to("meta"))


def test_sampled_softmax_loss():
    g = torch.Generator().manual_seed(1)
    C, B = 6, 4
    logits = torch.randn(B, C, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 2])
    # every label sampled once with uniform q: the correction cancels and, with the positive removed from the
    # negatives as an accidental hit, the loss is the full softmax cross-entropy
    neg_labels = torch.arange(C).expand(B, C)
    loss = torchxc.sampled_softmax_loss(logits.gather(1, y[:, None])[:, 0], logits, neg_labels,
                                        torch.full((B, C), -math.log(C), dtype=torch.float64), y,
                                        pos_log_q=torch.full((B,), -math.log(C), dtype=torch.float64),
                                        reduction="none")
    assert max_err(loss, torch.nn.functional.cross_entropy(logits, y, reduction="none")) < 1e-12
    # without removal, the positive also counts among the negatives
    kept = torchxc.sampled_softmax_loss(logits.gather(1, y[:, None])[:, 0], logits, neg_labels,
                                        torch.zeros(B, C, dtype=torch.float64), y, remove_accidental_hits=False,
                                        reduction="sum")
    ref = (torch.logsumexp(torch.cat([logits.gather(1, y[:, None]), logits], 1), 1) - logits.gather(1, y[:, None])[:, 0])
    assert max_err(kept, ref.sum()) < 1e-12
    with pytest.raises(ValueError, match="expected pos_logits/pos_labels"):
        torchxc.sampled_softmax_loss(logits[:, 0], logits, neg_labels[:2], logits, y)
    none = torch.zeros(B, 0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"at least one sampled negative per example \(S >= 1\)"):
        torchxc.sampled_softmax_loss(logits[:, 0], none, none.long(), none, y)


def test_fit_keeps_float64_and_accepts_half_features():
    """float64 features give a float64 sampler (nodes, projection and mean alike); float16 a float32 one."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 6, dtype=torch.float64, generator=g)
    y = torch.randint(0, 5, (60,), generator=g)
    s = torchxc.TreeSampler.fit(x, y, 5, dim=3, progress=False)
    assert {s.node_weight.dtype, s.node_bias.dtype, s.projection.dtype, s.mean.dtype} == {torch.float64}
    labels, log_q = s.sample(x[:4], 8)
    assert log_q.dtype == torch.float64 and torch.equal(s.log_prob(x[:4], labels), log_q)
    assert torch.allclose(s.log_prob_all(x[:4]).exp().sum(1), torch.ones(4, dtype=torch.float64))
    # an offset of 1e8 over a unit spread: centred in float64 before the float32 fit, so the tree is the one of
    # the centred features (cast to float32 first, 1e8 + x rounds to multiples of 8 and the spread is lost)
    far = torchxc.TreeSampler.fit(x + 1e8, y, 5, dim=3, progress=False)
    assert (far.mean - 1e8 - x.mean(0)).abs().max() < 1e-6
    torch.testing.assert_close(far.log_prob_all(x + 1e8), s.log_prob_all(x), rtol=0, atol=1e-5)
    h = torchxc.TreeSampler.fit(x.half(), y, 5, dim=3, progress=False)
    assert h.node_weight.dtype == torch.float32 and h.sample(x[:4].half(), 8)[1].dtype == torch.float32
    # from_parameters: a float32 projection and bias are converted to the nodes' dtype
    p = torchxc.TreeSampler.from_parameters(torch.randn(7, 3, dtype=torch.float64), torch.randn(7), 5,
                                            projection=torch.randn(6, 3), mean=torch.randn(6))
    assert p.node_bias.dtype == p.projection.dtype == torch.float64 and p.log_prob_all(x[:2]).dtype == torch.float64


def test_log_prob_all_exact_for_large_logits():
    """log sigmoid without softplus's threshold: a logit of -21 gives log q = -21 - log1p(e^-21) exactly."""
    s = torchxc.TreeSampler.from_parameters(torch.zeros(1, 1, dtype=torch.float64),
                                            torch.tensor([-21.0], dtype=torch.float64), 2)
    z = torch.zeros(1, 1, dtype=torch.float64)
    want = -21.0 - math.log1p(math.exp(-21.0))
    assert s.log_prob_all(z)[0, 1].item() == pytest.approx(want, rel=1e-15, abs=0)
    assert s.log_prob(z, torch.tensor([[1]]))[0, 0].item() == pytest.approx(want, rel=1e-15, abs=0)


def test_empty_batch_backward_and_no_double_backward():
    s = torchxc.TreeSampler.from_parameters(torch.randn(7, 3, dtype=torch.float64),
                                            torch.randn(7, dtype=torch.float64), 5)
    s.log_prob(torch.randn(0, 3, dtype=torch.float64), torch.zeros(0, 2, dtype=torch.long)).sum().backward()
    assert s.node_weight.grad.abs().sum() == 0 and s.node_bias.grad.abs().sum() == 0
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    g, = torch.autograd.grad(s.log_prob(x, torch.tensor([[1], [4]])).sum(), s.node_weight, create_graph=True)
    with pytest.raises(RuntimeError, match="torchxc::tree_log_prob: double backward"):
        (g ** 2).sum().backward()


def test_api_bad_input_errors():
    with pytest.raises(ValueError, match="num_labels must be >= 1"):
        torchxc.TreeSampler.from_parameters(torch.zeros(0, 1), torch.zeros(0), 0)
    with pytest.raises(RuntimeError, match=r"label_to_leaf\[1\] = 1000000000000 is not the leaf of a label"):
        torch.ops.torchxc.tree_log_prob(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1),
                                        torch.tensor([0, 10 ** 12]), torch.tensor([[1]]))
    with pytest.raises(RuntimeError, match="torchxc::tree_log_prob: expected labels on cpu"):
        torch.ops.torchxc.tree_log_prob(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.tensor([0, 1]),
                                        torch.tensor([[1]], device="meta"))
    t = torchxc.WeightTree(torch.tensor([1.0, 0.0, 3.0, 0.0, 2.0]))
    for bad in ([-1], [5], [-6]):
        with pytest.raises(ValueError, match=r"WeightTree.log_prob: indices must lie in \[0, 5\)"):
            t.log_prob(torch.tensor(bad))
    with pytest.raises(ValueError, match="WeightTree.update: expected integer label indices"):
        t.update(torch.tensor([1.7]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="expected one weight or one per index"):
        t.update([1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sum overflows float64"):
        torchxc.WeightTree(torch.tensor([1e308, 1e308, 1e308], dtype=torch.float64))
    with pytest.raises(ValueError, match="sum would overflow float64"):
        t.update([0, 1], torch.tensor([1e308, 1e308], dtype=torch.float64))
    assert float(t.total) == 6.0  # unchanged by the refused update
    # an update whose new sum is finite is taken, though old total + new weights would overflow
    big = torchxc.WeightTree(torch.tensor([1e308, 1.0, 1.0, 1.0], dtype=torch.float64))
    big.update(torch.tensor([0, 1]), torch.tensor([1.0, 1.7e308], dtype=torch.float64))
    assert big.weights.tolist() == [1.0, 1.7e308, 1.0, 1.0] and float(big.total) == 1.7e308
    before = big.tree.clone()
    with pytest.raises(ValueError, match="sum would overflow float64"):
        big.update(torch.tensor([2]), torch.tensor([1.7e308], dtype=torch.float64))
    assert torch.equal(big.tree, before)  # a refused update leaves every node as it was
    # a list of weights, like update's; counts that are not non-negative ints refused by name
    assert torchxc.WeightTree([1.0, 2.0]).weights.tolist() == [1.0, 2.0]
    for bad in (-1, 2.5, True, torch.tensor(2.0), torch.tensor(True), "3", 2**63, 2**64):
        with pytest.raises(ValueError, match="WeightTree.sample: n must be a non-negative int"):
            t.sample(bad)
    assert t.sample(torch.tensor(3)).shape == (3,)
    sampler = torchxc.TreeSampler.from_parameters(torch.zeros(3, 2), torch.zeros(3), 4)
    with pytest.raises(ValueError, match="TreeSampler.sample: num_samples must be a non-negative int, got 2.7"):
        sampler.sample(torch.zeros(2, 2), 2.7)  # it drew 2
    with pytest.raises(ValueError, match=r"num_samples must be a non-negative int below 2\^63, got 1844674407"):
        sampler.sample(torch.zeros(2, 2), 2**64)  # an argument-parsing error from the op's binding
    # a state whose tree this class would not build is refused, and the tree is left as it was

    def overflowing(tr):  # leaves whose sums are consistent but reach inf (what the constructor refuses)
        tr[t.offset:t.offset + 2] = 1e308
        for level in range(t.depth - 1, -1, -1):
            first, n = (1 << level) - 1, 1 << level
            tr[first:first + n] = tr[2 * first + 1:2 * first + 1 + 2 * n:2] + tr[2 * first + 2:2 * first + 2 + 2 * n:2]

    for change, match in ((lambda tr: tr.__setitem__(0, tr[0] + 1), "inner nodes must be the sums"),
                          (lambda tr: tr.__setitem__(-1, -1.0), "finite and non-negative"),
                          (lambda tr: tr.__setitem__(t.offset + 5, 1.0), "padding leaves must be zero"),
                          (lambda tr: overflowing(tr), "sum overflows")):
        state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in t.state_dict().items()}
        change(state["tree"])
        before = t.tree.clone()
        with pytest.raises(ValueError, match=match):
            t.load_state_dict(state)
        assert torch.equal(t.tree, before)
    other = torchxc.WeightTree(torch.ones(4))
    other.load_state_dict(big.state_dict())  # an updated tree's own state loads
    assert torch.equal(other.tree, big.tree)
    t.update([1, 3], [2.0, 0.5])  # lists are accepted, as in log_prob
    assert max_err(t.log_prob([1, 3]).exp(), torch.tensor([2.0, 0.5], dtype=torch.float64) / 8.5) < 1e-15
    t.update(torch.arange(5), torch.zeros(5))
    with pytest.raises(ValueError, match="WeightTree.log_prob: every weight is zero"):
        t.log_prob([0])
    with pytest.raises(ValueError, match="needs at least one negative"):
        torchxc.adversarial_negative_sampling_loss(torch.zeros(2), torch.zeros(2, 0), torch.zeros(2),
                                                   torch.zeros(2, 0))
    z, zz, nl = torch.zeros(2), torch.zeros(2, 1), torch.tensor([[1], [0]])
    with pytest.raises(ValueError, match=r"expected positives int64 \[B = 2, P\]"):
        torchxc.sampled_softmax_loss(z, zz, nl, zz, torch.tensor([0, 1]), positives=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="expected pos_log_q of shape"):
        torchxc.sampled_softmax_loss(z, zz, nl, zz, torch.tensor([0, 1]), pos_log_q=zz)


def test_branches_below_2_pow_minus_16_are_drawn_at_their_probability():
    """A branch of probability eps = 5.6e-9 (bias -19) is taken at rate eps: the level's 16 random bits leave u's
    interval undecided with probability 2^-16, and then more bits decide. (With 16 bits alone it would be taken
    whenever they were all zero: at rate 2^-16, 2048 expected draws here instead of 0.75.)"""
    s = torchxc.TreeSampler.from_parameters(torch.zeros(1, 1), torch.tensor([-19.0]), 2)
    z = torch.zeros(4096, 1)
    rare = sum(int((s.sample(z, 4096, generator=torch.Generator().manual_seed(i))[0] == 1).sum()) for i in range(8))
    assert rare <= 3


def test_refined_branch_choices_agree_between_float32_and_float64_walks():
    """With eps = 2^-20 (logit -13.86) the level's 16 bits leave the choice open once per 2^16 draws (1024 times
    here) and the refinement accepts 2^-4 of those: the float32 vector walks (refine_block) and the float64 scalar
    walk (tree_take_unlikely) must take the same branches, draw for draw (64 rare draws expected in 2^26, every one
    decided by the refinement)."""
    b = math.log(2.0 ** -20)
    labels = []
    for dtype in (torch.float32, torch.float64):
        s = torchxc.TreeSampler.from_parameters(torch.zeros(1, 1, dtype=dtype), torch.tensor([b], dtype=dtype), 2)
        z = torch.zeros(4096, 1, dtype=dtype)
        labels.append(torch.cat([s.sample(z, 4096, generator=torch.Generator().manual_seed(i))[0] for i in range(4)]))
    assert torch.equal(labels[0], labels[1])
    assert 32 <= int((labels[0] == 1).sum()) <= 128  # refinements accepted at their rate (64 expected)


@requires_cuda
def test_cuda_refined_draws_equal_cpu_draws():
    """The CUDA walk (tree_draw with tree_take_unlikely) refines the undecided choices as the CPU walks do."""
    b = math.log(2.0 ** -20)
    cpu = torchxc.TreeSampler.from_parameters(torch.zeros(1, 1), torch.tensor([b]), 2)
    z = torch.zeros(4096, 1)
    gpu = torchxc.TreeSampler.from_parameters(torch.zeros(1, 1), torch.tensor([b]), 2).cuda()
    for i in range(4):
        a = cpu.sample(z, 4096, generator=torch.Generator().manual_seed(i))[0]
        c = gpu.sample(z.cuda(), 4096, generator=torch.Generator().manual_seed(i))[0].cpu()
        assert torch.equal(a, c)


def test_sample_empty_batch_zero_samples_and_noncontiguous_features():
    s = make_tree(37, 5, dtype=torch.float32)
    lab, lq = s.sample(torch.randn(0, 5), 8)
    assert lab.shape == (0, 8) and lq.shape == (0, 8)
    lab, lq = s.sample(torch.randn(6, 5), 0)
    assert lab.shape == (6, 0) and lq.shape == (6, 0)
    base = torch.randn(5, 12, generator=torch.Generator().manual_seed(4))
    x = base.t()[::2]  # [6, 5], non-contiguous
    assert not x.is_contiguous()
    a = s.sample(x, 16, generator=torch.Generator().manual_seed(1))
    b = s.sample(x.contiguous(), 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(s.log_prob(x, a[0]), s.log_prob(x.contiguous(), a[0]))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.integers(0, 10 ** 6), st.integers(1, 5))
def test_weight_tree_updates_equal_a_rebuilt_tree(C, seed, rounds):
    """After random batched updates (repeats, zeros, integer weights so that sums are exact), every node of the sum
    tree equals that of a tree built from the final weights."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 5, (C,), generator=g).double()
    w[0] += 1  # not all zero
    t = torchxc.WeightTree(w)
    for _ in range(rounds):
        idx = torch.randint(C, (torch.randint(1, 2 * C + 1, (1,), generator=g).item(),), generator=g)
        new = torch.randint(0, 5, idx.shape, generator=g).double()
        t.update(idx, new)
        last = {int(i): float(v) for i, v in zip(idx, new)}  # the last occurrence of an index wins
        for i, v in last.items():
            w[i] = v
    assert torch.equal(t.weights, w)
    assert torch.equal(t.tree, torchxc.WeightTree(w).tree)


@pytest.mark.parametrize("n", [2, 8, 300])
def test_weight_tree_small_batches_start_the_walk_below_the_root(n):
    """sample(n) finds the node of level min(depth, bit_length(n) + 2) by a binary search in that level's running
    sums and walks on from there: small batches on a deep tree take both parts (n = 2: 4 levels searched, 8 walked).
    Zero-weight labels and whole zero subtrees are never drawn; the frequencies of pairs of sibling labels (a level
    below every search level here) fit the weights."""
    C = 4096
    g = torch.Generator().manual_seed(n)
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.05
    w[:256] = 0  # whole subtrees of the search level
    w[3000:] = 0  # the tail
    w[::7] = 0  # single leaves
    tree = torchxc.WeightTree(w)
    draws = torch.cat([tree.sample(n, generator=g) for _ in range(40_000 // n)])
    assert (w[draws] > 0).all()
    bins = torch.arange(C) // 2
    counts = torch.bincount(bins[draws], minlength=C // 2).double()
    p = torch.bincount(bins, weights=w, minlength=C // 2) / w.sum()
    assert (counts[p == 0] == 0).all() and chi2_pvalue(counts[p > 0], p[p > 0]) > 1e-4
    # the same draws from the same seed, whatever else ran in between
    assert torch.equal(tree.sample(n, generator=torch.Generator().manual_seed(1)),
                       tree.sample(n, generator=torch.Generator().manual_seed(1)))


def test_weight_tree_never_draws_past_the_last_weight():
    """A u drawn as rand * total can round up to the total itself (here a subnormal one): the search must still land
    on a label of positive weight, never on the zero tail (an index past the tree without the clamp)."""
    w = torch.zeros(4096, dtype=torch.float64)
    w[:3] = 1e-321
    tree = torchxc.WeightTree(w)
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 1000):
        draws = torch.cat([tree.sample(n, generator=g) for _ in range(max(1, 2000 // n))])
        assert draws.min() >= 0 and draws.max() <= 2


def test_sampling_api_refuses_inputs_that_would_be_misread():
    """A bool multi-hot `positives` was compared as the values 0 / 1 (loss 2.1269 instead of 0.6931), a log q of
    another shape broadcast into corrected_logits, a float leaf_to_label was truncated, float16 nodes failed only at
    sampling and a 2-D WeightTree was flattened."""
    pos_logits = torch.zeros(2, dtype=torch.float64)
    neg_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    neg_labels, pos_labels = torch.tensor([[3, 1], [2, 4]]), torch.tensor([0, 5])
    positives = torch.tensor([[0, 3], [5, 1]])
    ok = torchxc.sampled_softmax_loss(pos_logits, neg_logits, neg_labels, torch.zeros_like(neg_logits), pos_labels,
                                      positives=positives, reduction="none")
    assert max_err(ok, torch.tensor([math.log(2), math.log(1 + 1 + math.e)], dtype=torch.float64)) < 1e-12
    multi_hot = torch.zeros(2, 6, dtype=torch.bool)
    multi_hot[[0, 0, 1, 1], [0, 3, 5, 1]] = True
    with pytest.raises(ValueError, match=r"expected positives of an integer dtype \(class indices, int64 \[B, P\] "
                                         r"padded with -1, not a multi-hot mask\), got torch.bool"):
        torchxc.sampled_softmax_loss(pos_logits, neg_logits, neg_labels, torch.zeros_like(neg_logits), pos_labels,
                                     positives=multi_hot)
    with pytest.raises(ValueError, match="expected neg_labels of an integer dtype"):
        torchxc.sampled_softmax_loss(pos_logits, neg_logits, neg_labels.double(), neg_logits, pos_labels)
    with pytest.raises(ValueError, match=r"corrected_logits: expected log_q of the logits' shape \(3, 3\), got \(3,\)"):
        torchxc.corrected_logits(torch.zeros(3, 3), torch.zeros(3))

    sampler = make_tree(37, 4, dtype=torch.float32)
    W, b, l2l = sampler.node_weight.detach(), sampler.node_bias.detach(), sampler.leaf_to_label
    with pytest.raises(ValueError, match="leaf_to_label must hold integer labels, got torch.float32"):
        torchxc.TreeSampler.from_parameters(W, b, 37, l2l.float())
    with pytest.raises(ValueError, match="node_weight must be float32 or float64 .* got torch.float16 and "
                                         "torch.float32"):
        torchxc.TreeSampler.from_parameters(W.half(), b, 37, l2l)
    assert torchxc.TreeSampler.from_parameters(W, b.half(), 37, l2l).node_bias.dtype == torch.float32  # exact cast
    with pytest.raises(ValueError, match="TreeSampler: num_labels must be a non-negative int, got True"):
        torchxc.TreeSampler.from_parameters(W[:1], b[:1], True)
    with pytest.raises(ValueError, match="TreeSampler: num_labels must be a non-negative int, got 37.0"):
        torchxc.TreeSampler.from_parameters(W, b, 37.0, l2l)
    with pytest.raises(ValueError, match=r"WeightTree: expected weights \[C\] \(one per label\), got shape \(2, 3\)"):
        torchxc.WeightTree(torch.ones(2, 3))


def test_sampler_api_refuses_inputs_it_misread():
    """From a review of the Python API: each case below returned a wrong answer silently or failed deep inside."""
    sampler = make_tree(37, 4, torch.float32)
    x = torch.randn(3, 4)
    for bad in (x.to(torch.complex64), x.long(), x > 0):  # complex lost its imaginary part, ints passed silently
        with pytest.raises(ValueError, match=f"TreeSampler: expected float features, got {bad.dtype}"):
            sampler.sample(bad, 2)
    with pytest.raises(ValueError, match="generator must be a torch.Generator or None, got int"):
        sampler.sample(x, 2, generator=5)
    with pytest.raises(ValueError, match="projection must be a real floating-point tensor"):
        torchxc.TreeSampler.from_parameters(sampler.node_weight.detach(), sampler.node_bias.detach(), 37,
                                            projection=torch.zeros(6, 4, dtype=torch.complex64))
    # a loaded state whose label maps disagree: sample never drew a label that log_prob gave mass to
    state = sampler.state_dict()  # its tensors share the buffers' storage: compare with a copy
    before = sampler.leaf_to_label.clone()
    broken = dict(state, leaf_to_label=state["leaf_to_label"].clone())
    broken["leaf_to_label"][3] = broken["leaf_to_label"][4]
    stale = dict(state, leaf_to_label=state["leaf_to_label"].clone())
    stale["leaf_to_label"][[0, 1]] = stale["leaf_to_label"][[1, 0]]  # a permutation; label_to_leaf: not its inverse
    for bad in (broken, stale):
        with pytest.raises(ValueError, match="TreeSampler.load_state_dict: leaf_to_label must have 64 entries"):
            sampler.load_state_dict(bad)
        assert torch.equal(sampler.leaf_to_label, before)  # left as it was
    sampler.load_state_dict(state)
    # fit: whitening a spread below float32's normal range gave NaN nodes; arguments that were cast or failed inside
    g = torch.Generator().manual_seed(0)
    y = torch.randint(5, (200,), generator=g)
    with pytest.raises(ValueError, match="below float32's normal range"):
        torchxc.TreeSampler.fit(torch.randn(200, 4, generator=g) * 1e-39, y, 5, dim=2, progress=False)
    for kw, name in ((dict(num_labels=5.0), "num_labels"), (dict(dim=2.5), "dim"), (dict(dim=True), "dim"),
                     (dict(iterations=2.5), "iterations"), (dict(newton_steps=1.5), "newton_steps")):
        with pytest.raises(ValueError, match=f"TreeSampler.fit: {name} must be a non-negative int"):
            torchxc.TreeSampler.fit(torch.randn(200, 4, generator=g), y, **{"num_labels": 5, **kw}, progress=False)
    with pytest.raises(ValueError, match="TreeSampler.fit: needs at least one feature, got F = 0"):
        torchxc.TreeSampler.fit(torch.zeros(200, 0), y, 5, progress=False)
    # WeightTree.update with weights that require grad chained every update into one autograd graph
    tree = torchxc.WeightTree(torch.ones(4))
    tree.update([0], torch.tensor([2.0], requires_grad=True))
    assert tree.tree.grad_fn is None and not tree.log_prob(torch.tensor([0])).requires_grad
    for make in (lambda: torchxc.WeightTree(torch.ones(4, dtype=torch.complex64)),
                 lambda: tree.update([1], torch.ones(1, dtype=torch.complex64))):
        with pytest.raises(ValueError, match="expected real weights, got torch.complex64"):
            make()
    # sampled softmax: a positive of q = 0 (log q = -inf) gave NaN; its corrected logit dominates: loss 0
    pos = torch.zeros(2, requires_grad=True)
    neg = torch.randn(2, 3, requires_grad=True)
    loss = torchxc.sampled_softmax_loss(pos, neg, torch.ones(2, 3, dtype=torch.long), torch.full((2, 3), -1.0),
                                        torch.zeros(2, dtype=torch.long), pos_log_q=torch.tensor([-math.inf, -2.0]),
                                        reduction="none")
    loss.sum().backward()
    assert loss[0] == 0 and math.isfinite(loss[1]) and torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    assert loss[1].item() == pytest.approx((torch.logsumexp(torch.cat([torch.tensor([2.0]), neg[1].detach() + 1]), 0)
                                            - 2.0).item(), rel=1e-6)
    # the losses: integer logits failed inside softplus / logsumexp; a negative reg is unbounded below
    B = torch.zeros(2)
    with pytest.raises(ValueError, match="adversarial_negative_sampling_loss: expected pos_logits of a floating-point"):
        torchxc.adversarial_negative_sampling_loss(B.long(), torch.zeros(2, 3), B, torch.zeros(2, 3))
    for reg in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="reg must be a finite number >= 0"):
            torchxc.adversarial_negative_sampling_loss(B, torch.zeros(2, 3), B, torch.zeros(2, 3), reg=reg)
    with pytest.raises(ValueError, match="sampled_softmax_loss: expected neg_logits of a floating-point dtype"):
        torchxc.sampled_softmax_loss(B, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long),
                                     torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def test_sampling_losses_and_weight_tree_from_a_user_side_probe():
    """An integer 0/1 multi-hot `positives` passed the dtype check and made labels 0 and 1 every row's positives; the
    fp16 regulariser overflowed before reg scaled it; a positive of logit -inf with an accidental hit gave NaN
    instead of inf; three weights of 5e-324 were drawn 1 : 2 : 3; bad arguments failed deep inside."""
    S, A = torchxc.sampled_softmax_loss, torchxc.adversarial_negative_sampling_loss
    multi_hot = torch.zeros(2, 6, dtype=torch.long)
    multi_hot[0, 3] = multi_hot[1, 4] = 1
    pos_labels, neg_labels = torch.tensor([3, 4]), torch.tensor([[0, 1, 3], [0, 1, 4]])
    args = (torch.zeros(2), torch.zeros(2, 3), neg_labels, torch.full((2, 3), -1.0), pos_labels)
    with pytest.raises(ValueError, match="sampled_softmax_loss: positives holds only 0s and 1s in 6 columns: a "
                                         "multi-hot matrix"):
        S(*args, positives=multi_hot)
    padded = torch.tensor([[3, 3, -1], [4, 2, -1]])  # a repeated label (the positive listed again) is harmless
    assert torch.equal(S(*args, positives=padded, reduction="none"), S(*args, reduction="none"))
    assert S(*args, positives=multi_hot, remove_accidental_hits=False).isfinite()  # positives unused there
    # -inf positive logit with an accidental hit: inf (the non-hit negatives are infinitely more likely), not NaN
    loss = S(torch.tensor([-math.inf]), torch.zeros(1, 2), torch.tensor([[0, 5]]), torch.full((1, 2), -1.0),
             torch.tensor([0]), reduction="none")
    assert loss.tolist() == [math.inf]
    h = torch.float16
    got = A(torch.tensor([5.0], dtype=h), torch.tensor([[0.0]], dtype=h), torch.tensor([-300.0], dtype=h),
            torch.tensor([[-3.0]], dtype=h), reg=1e-2)
    ref = A(torch.tensor([5.0]), torch.tensor([[0.0]]), torch.tensor([-300.0]), torch.tensor([[-3.0]]), reg=1e-2)
    assert ref.item() == pytest.approx(871.04, rel=1e-4)
    assert got.dtype == h and got.item() == pytest.approx(ref.item(), rel=1e-3)
    assert A(*(t.double() for t in (torch.zeros(1), torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 1))),
             reg=torch.tensor(0.5)).item() == pytest.approx(2 * math.log(2))  # a 0-d tensor reg is a number
    for reg in (None, "0.1", True, torch.tensor([0.1, 0.2]), 1j):
        with pytest.raises(ValueError, match="adversarial_negative_sampling_loss: reg must be a finite number >= 0"):
            A(torch.zeros(1), torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 1), reg=reg)
    with pytest.raises(TypeError, match="sampled_softmax_loss: remove_accidental_hits must be a bool, got str"):
        S(*args, remove_accidental_hits="no")
    assert torch.equal(S(*args, remove_accidental_hits=np.True_), S(*args))
    reg = torch.tensor(0.5, dtype=torch.double, requires_grad=True)  # a tensor reg keeps its gradient
    A(torch.ones(1).double(), torch.zeros(1, 1).double(), torch.zeros(1).double(), torch.zeros(1, 1).double(),
      reg=reg).backward()
    assert reg.grad.item() == pytest.approx(1.0)  # (1 + 0)^2 + 0^2
    with pytest.raises(TypeError, match="sampled_softmax_loss: pos_logits must be a tensor, got list"):
        S([0.0, 0.0], *args[1:])
    with pytest.raises(ValueError, match="sampled_softmax_loss: neg_labels of dtype uint64 are not supported"):
        S(args[0], args[1], neg_labels.to(torch.uint64), *args[3:])
    tree = torchxc.WeightTree(torch.full((3,), 5e-324, dtype=torch.double))
    counts = torch.bincount(tree.sample(30000, torch.Generator().manual_seed(0)), minlength=3)
    assert chisquare(counts.numpy()).pvalue > 1e-4, counts  # it was [4991, 9911, 15098]
    assert torch.allclose(tree.log_prob(torch.arange(3)), torch.full((3,), -math.log(3), dtype=torch.double))
    with torch.no_grad():  # the buffer changed in place (e.g. a broadcast of buffers): the host-side flag is stale,
        tree.tree.copy_(torchxc.WeightTree(torch.tensor([1e300, 1.0, 1e300], dtype=torch.double)).tree)
    assert torch.bincount(tree.sample(6000, torch.Generator().manual_seed(0)), minlength=3)[[0, 2]].min() > 2700
    tree.update(torch.tensor([0, 1, 2]), torch.tensor([1.0, 0.0, 0.0]))  # back to normal weights: no scaling
    assert (tree.sample(1000, torch.Generator().manual_seed(1)) == 0).all()
    with pytest.raises(ValueError, match="WeightTree.sample: generator must be a torch.Generator or None, got int"):
        tree.sample(3, generator=5)
    with pytest.raises(ValueError, match="WeightTree.log_prob: indices of dtype uint64 are not supported"):
        tree.log_prob(torch.tensor([1], dtype=torch.uint64))


def test_sampler_modules_under_autocast_casts_partial_states_and_meta():
    """A user-side review of the modules: a fitted sampler (it has a projection) failed inside an autocast region
    (z became bfloat16); a parent's .half() made the sampler unusable; a state of another label count named a
    permutation problem; a state with one label map alone (strict=False) loaded a pair that disagreed (sample's log q
    then differed from log_prob by nats); construction under torch.device("meta") failed; reprs were empty."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(200, 8, generator=g), torch.randint(12, (200,), generator=g)
    s = torchxc.TreeSampler.fit(X, y, num_labels=12, dim=4, progress=False)
    ref = s.sample(X[:4], 16, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # z in the nodes' dtype: the same draws and log q
        got = s.sample(X[:4], 16, generator=torch.Generator().manual_seed(1))
        assert s.log_prob(X[:4], got[0]).dtype == torch.float32
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    half = torch.nn.ModuleDict({"s": make_tree(12, 4, torch.float32)}).half()["s"]
    assert half.node_weight.dtype == torch.float32 and half.leaf_to_label.dtype == torch.long
    assert torch.equal(half.node_weight, make_tree(12, 4, torch.float32).node_weight)  # not rounded to float16
    # with gradients: the grad object is converted in place by the cast; the sampler keeps its float32 values
    trained = make_tree(12, 4, torch.float32)
    trained.log_prob(torch.randn(3, 4), torch.tensor([[1], [5], [11]])).sum().backward()
    grad = trained.node_weight.grad.clone()
    parent = torch.nn.Sequential(trained, torch.nn.Linear(3, 3)).half()
    assert parent[1].weight.dtype == torch.float16 and torch.equal(trained.node_weight.grad, grad)
    assert make_tree(12, 4, torch.float32).double().node_weight.dtype == torch.float64
    assert repr(s) == "TreeSampler(num_labels=12, depth=4, k=4, features=8, dtype=torch.float32)"
    a, b = make_tree(10, 3, seed=0), make_tree(9, 3, seed=1)
    with pytest.raises(ValueError, match="the state is a sampler of 10 labels, this one has 9"):
        b.load_state_dict(a.state_dict())
    dst = make_tree(10, 3, seed=2)
    one_map = {k: v for k, v in a.state_dict().items() if k != "label_to_leaf"}
    with pytest.raises(ValueError, match="label_to_leaf must be its inverse"):
        dst.load_state_dict(one_map, strict=False)
    assert torch.equal(dst.leaf_to_label, make_tree(10, 3, seed=2).leaf_to_label)  # refused before any copy
    # padding leaves may hold any value: a one-map state of the same maps loads
    l2l = torch.tensor([3, 0, 4, 1, 2, 5, 6, 7])
    twin = torchxc.TreeSampler(torch.randn(7, 3), torch.randn(7), 5, leaf_to_label=l2l)
    twin.load_state_dict({k: v for k, v in torchxc.TreeSampler(torch.randn(7, 3), torch.randn(7), 5, leaf_to_label=l2l)
                          .state_dict().items() if k != "label_to_leaf"}, strict=False)
    with torch.device("meta"):
        lazy = torchxc.TreeSampler.from_parameters(torch.randn(15, 3), torch.randn(15), 10)
        tree = torchxc.WeightTree(torch.ones(5))
    assert lazy.node_weight.is_meta and tree.log_prob(torch.tensor([1], device="meta")).shape == (1,)
    lazy = lazy.to_empty(device="cpu").double()
    lazy.load_state_dict(a.state_dict())
    z = torch.randn(3, 3, dtype=torch.float64)
    assert torch.equal(lazy.log_prob_all(z), a.log_prob_all(z))
    tree = tree.to_empty(device="cpu")
    tree.load_state_dict(torchxc.WeightTree(torch.arange(1.0, 6.0)).state_dict())
    assert tree.log_prob(torch.tensor([4])).item() == pytest.approx(math.log(5 / 15))
    assert repr(tree) == "WeightTree(num_labels=5)"


def test_sampler_sample_in_compiled_code_and_weight_tree_log_prob_compiled():
    """The seed is drawn on the host: under torch.compile(fullgraph=True) sample raises naming itself (it was an
    error about a SymInt seed); without fullgraph it runs eagerly. WeightTree.log_prob's range check (data
    dependent) failed under fullgraph compile."""
    s = make_tree(37, 4, torch.float32)
    x = torch.randn(3, 4)
    with pytest.raises(Exception, match="TreeSampler.sample: cannot run inside torch.compile"):
        torch.compile(lambda x: s.sample(x, 4), fullgraph=True)(x)
    assert torch.compile(lambda x: s.sample(x, 4))(x)[0].shape == (3, 4)
    w = torchxc.WeightTree(torch.arange(1.0, 6.0))
    idx = torch.tensor([1, 4])
    compiled = torch.compile(w.log_prob, fullgraph=True)
    assert torch.equal(compiled(idx), w.log_prob(idx))
    for bad in (torch.tensor([-1, 3]), torch.tensor([6, 3])):  # an inner node of the heap, a padding leaf
        with pytest.raises(RuntimeError, match=r"WeightTree.log_prob: indices must lie in \[0, 5\)"):
            compiled(bad)


def test_tree_ops_called_directly():
    """Direct torch.ops calls (a review that fuzzed them): the backward's fake kernel kept a transposed input's
    strides (opcheck failed); its k = 0 gradient failed on a reshape of -1; tree_sample / tree_log_prob_all /
    tree_log_prob_backward on inputs that require grad gave outputs whose backward silently gave zeros; an integer or
    complex grad was accepted; an empty label_to_leaf was reported as num_labels = 0, an argument these ops lack."""
    ops = torch.ops.torchxc
    z, w, b = torch.randn(4, 3).t(), torch.randn(7, 4).t().contiguous().t().contiguous(), torch.randn(7)
    labels = torch.tensor([[0, 4], [1, 2], [3, 3]])
    torch.library.opcheck(ops.tree_log_prob_backward.default, (torch.randn(3, 2), z, w, b, torch.arange(5), labels))
    torch.library.opcheck(ops.tree_log_prob_backward.default,
                          (torch.randn(3, 2), z.contiguous(), torch.randn(4, 7).t(), b, torch.arange(5), labels))
    # k = 0: logits are the biases; the bias gradient against autograd through a float64 formula
    bias = torch.randn(1, dtype=torch.float64, requires_grad=True)
    lab = torch.tensor([[1], [0], [1]])
    sampler = torchxc.TreeSampler.from_parameters(torch.zeros(1, 0, dtype=torch.float64), bias.detach(), 2)
    sampler.log_prob(torch.zeros(3, 0, dtype=torch.float64), lab).sum().backward()
    ref = torch.nn.functional.logsigmoid(torch.where(lab == 1, bias, -bias)).sum()
    assert torch.allclose(sampler.node_bias.grad, torch.autograd.grad(ref, bias)[0])
    zg = torch.randn(3, 4, requires_grad=True)
    assert not ops.tree_sample(zg, torch.randn(7, 4), torch.randn(7), torch.arange(8), 5, 3, 0)[1].requires_grad
    assert not ops.tree_log_prob_all(zg, torch.randn(7, 4), torch.randn(7), torch.arange(5)).requires_grad
    grads = ops.tree_log_prob_backward(torch.ones(1, 1), zg[:1], torch.randn(1, 4), torch.randn(1), torch.arange(2),
                                       torch.tensor([[1]]))
    assert not any(t.requires_grad for t in grads)
    for bad in (torch.ones(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.complex64)):
        with pytest.raises(RuntimeError, match="tree_log_prob_backward: expected a floating-point grad"):
            ops.tree_log_prob_backward(bad, torch.randn(1, 3), torch.randn(1, 3), torch.randn(1), torch.arange(2),
                                       torch.tensor([[1]]))
    with pytest.raises(RuntimeError, match=r"tree_log_prob: expected label_to_leaf with one entry per label"):
        ops.tree_log_prob(torch.randn(1, 3), torch.randn(1, 3), torch.randn(1), torch.zeros(0, dtype=torch.long),
                          torch.tensor([[1]]))
