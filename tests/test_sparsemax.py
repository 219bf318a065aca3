"""torchxc.sparsemax and its backward against a float64 sort-based reference.

The reference is the paper's algorithm written plainly: sort each row in decreasing order, the support is the
longest prefix with 1 + k z_(k) > sum_{i<=k} z_(i), tau = (sum of the support - 1) / |support|, output
max(z - tau, 0). Rows are shifted by their maximum first (sparsemax is shift invariant), which keeps the float64
reference exact for huge magnitudes too. Rows with a non-finite maximum give NaN.
"""
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import torchxc
from testing import (CUDA_PATHS, check_against_reference, device_ids, devices, dtypes, max_err, num_threads,
                     outputs_without_and_with, requires_cuda, use_cuda_path)


def sparsemax_reference(x: torch.Tensor, dim: int = -1, dtype=torch.float64) -> torch.Tensor:
    """Sort-based sparsemax computed in `dtype` (float64 for the reference; the input dtype gives the 'plain
    PyTorch in low precision' computation of the tolerance rule)."""
    z = x.to(dtype).movedim(dim, -1)
    if z.numel() == 0:
        return z.movedim(-1, dim)
    m = z.amax(-1, keepdim=True)
    u = z - m
    us, _ = torch.sort(u, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=dtype, device=z.device)
    cs = us.cumsum(-1)
    size = (1 + k * us > cs).sum(-1, keepdim=True).clamp(min=1)
    tau = (cs.gather(-1, size - 1) - 1) / size.to(dtype)
    p = (u - tau).clamp(min=0)
    p = torch.where(torch.isfinite(m), p, torch.full_like(p, math.nan))
    return p.movedim(-1, dim)


def sparsemax_backward_reference(grad: torch.Tensor, p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Jacobian-vector product J g with J = diag(s) - s s^T / |s|, s = (p > 0)."""
    s = (p > 0).double()
    g = grad.double()
    mean = (g * s).sum(dim, keepdim=True) / s.sum(dim, keepdim=True)
    return s * (g - mean)


def make_input(shape, dtype, device, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


SHAPE_DIMS = [
    ((1,), 0), ((2,), -1), ((31,), 0), ((5, 1), -1), ((3, 2), 1), ((7, 31), -1), ((7, 31), 0), ((4, 1025), -1),
    ((64, 33), 1), ((5, 4097), -1), ((3, 5, 7), 0), ((3, 5, 7), 1), ((3, 5, 7), 2), ((2, 3, 4, 5), 1),
    ((2, 3, 4, 5), -1), ((3, 40000), -1), ((1, 70001), -1), ((2, 2 ** 20 + 3), -1),
]


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
@pytest.mark.parametrize("shape,dim", SHAPE_DIMS, ids=[f"{s}-d{d}" for s, d in SHAPE_DIMS])
@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_forward_matches_reference(device, dtype, shape, dim, scale):
    x = make_input(shape, dtype, device, scale)
    out = torchxc.sparsemax(x, dim)
    assert out.dtype == dtype and out.shape == x.shape and out.device == x.device
    ref = sparsemax_reference(x, dim)
    check_against_reference(out, ref, sparsemax_reference(x, dim, dtype=dtype), dtype)
    assert (out >= 0).all()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
def test_adversarial_rows(device, dtype):
    big = {torch.float16: 6e4, torch.bfloat16: 1e38, torch.float32: 1e30, torch.float64: 1e300}[dtype]
    inf = math.inf
    rows = [
        [0.0] * 9,  # ties everywhere: uniform
        [1.0, 1.0, 1.0, 0.0, -5.0, 1.0, 0.2, 0.9, -0.3],  # ties in the support
        [0.5, 0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5],  # ties exactly at the threshold
        [10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # one-hot-like
        [big, big / 2, -big, 0.0, 1.0, 2.0, -1.0, big, 3.0],  # huge magnitudes
        [big, big, big, big, big, big, big, big, big],  # huge ties
        [-big, -big, -big, -big, -big, -big, -big, -big, -big],
        [-inf, 0.3, -inf, -inf, 0.1, -inf, -inf, -inf, -inf],  # -inf mask
        [-inf, -inf, -inf, -inf, 7.0, -inf, -inf, -inf, -inf],  # one finite value: exactly one-hot
        [-inf] * 9,  # all masked: NaN, as softmax
        [0.0, math.nan, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # NaN: the row is NaN
        [0.0, inf, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # +inf: NaN, as softmax
        [1e-3 * i for i in range(9)],  # tiny gaps: full support
    ]
    x = torch.tensor(rows, dtype=torch.float64).to(dtype).to(device)
    out = torchxc.sparsemax(x)
    ref = sparsemax_reference(x)
    check_against_reference(out, ref, sparsemax_reference(x, dtype=dtype), dtype)
    # exact zeros where masked, exact one-hot for a single finite value, NaN exactly where softmax gives NaN
    assert (out[7][x[7].isinf()] == 0).all()
    assert out[8].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert torch.equal(out.isnan().all(-1), torch.softmax(x, -1).isnan().all(-1))
    assert not out[:9].isnan().any() and not out[12].isnan().any()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("d", [5, 100, 1000, 5000, 40000, 300000])
def test_masked_long_rows(device, d):
    # attention-style masks on every path (warp, block and split on CUDA; rows and long rows on the CPU)
    x = make_input((3, d), torch.float32, device, seed=d)
    mask = torch.rand(3, d, generator=torch.Generator().manual_seed(1)) < 0.7
    mask[:, 0] = False
    x = x.masked_fill(mask.to(device), -math.inf)
    out = torchxc.sparsemax(x)
    assert (out[mask.to(device)] == 0).all()
    check_against_reference(out, sparsemax_reference(x), None, torch.float32)


@requires_cuda
@pytest.mark.parametrize("path", list(CUDA_PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_cuda_row_paths(monkeypatch, path, dtype):
    """Each CUDA path (cooperative chunks, register rows, split rows) on rows the default would send elsewhere:
    forward and backward against the float64 reference, adversarial rows, masks."""
    use_cuda_path(monkeypatch, path)
    for shape in [(3, 5000), (2, 8193), (3, 40000), (2, 100003)]:
        for scale in (0.01, 1.0, 30.0):
            test_forward_matches_reference("cuda", dtype, shape, -1, scale)
        test_backward_matches_reference("cuda", dtype, shape, -1)
    test_adversarial_rows("cuda", dtype)
    if dtype == torch.float32:
        for d in (5, 5000, 40000):
            test_masked_long_rows("cuda", d)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("d", [1000, 100003, 2 ** 20 + 3])
def test_float64_near_uniform_rows_to_rounding(device, d):
    """float64 keeps float64 accuracy when the whole row is the support: every entry within 1e-9 of the others, so
    tau is about -1/d. The threshold search's last sum must not be the one taken at t = -1, whose d terms u - t are
    each about 1 (the answer came out 4e-8 off at d = 10^6, float32's accuracy). Reference: tau from the
    correctly rounded sum (math.fsum)."""
    gen = torch.Generator().manual_seed(d)
    x = torch.randn(2, d, generator=gen, dtype=torch.float64) * 1e-9
    x[1] += 1e-7 * torch.arange(d, dtype=torch.float64) / d  # an evenly spread row
    out = torchxc.sparsemax(x.to(device)).cpu()
    for r in range(2):
        tau = (math.fsum(x[r].tolist()) - 1.0) / d
        exact = x[r] - tau
        assert (exact > 0).all()  # the support is the whole row
        assert ((out[r] - exact).abs() / exact).max().item() < 1e-12


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_bisection_fallback(device, monkeypatch):
    # With no Newton steps allowed, every threshold comes from the bisection over representable numbers.
    monkeypatch.setenv("TORCHXC_SPARSEMAX_MAX_NEWTON", "0")
    for dtype, (shape, scale) in itertools.product(
        [torch.float32, torch.float64, torch.bfloat16], [((9, 37), 1.0), ((4, 3000), 0.01), ((2, 50000), 1.0)]
    ):
        x = make_input(shape, dtype, device, scale)
        check_against_reference(torchxc.sparsemax(x), sparsemax_reference(x),
                                sparsemax_reference(x, dtype=dtype), dtype)


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="the AVX2 row path runs on x86 CPUs with AVX2")
@pytest.mark.parametrize("avx512", ["off", "as_the_cpu_has_it"])
def test_portable_rows_match_avx2_rows(avx512):
    """On AVX2 CPUs without AVX-512 and on AMD CPUs the float32/bfloat16/float16 forward and backward use
    hand-written AVX2 rows, on Intel AVX-512 CPUs AVX-512 rows. With TORCHXC_SPARSEMAX_NO_AVX512=1 (avx512="off")
    the AVX2 rows run and TORCHXC_SPARSEMAX_NO_AVX2=1 forces the portable ones; without it, TORCHXC_SPARSEMAX_NO_AVX2=1
    forces the AVX-512 rows on AVX-512 CPUs (on AMD ones the run without it is the AVX2 rows with the AVX-512
    register search). Each must match the reference on every row length 1..70 (all vector tails), rows with more
    candidates than the AVX2 path keeps in registers, masks, NaN and huge values."""
    code = (
        "import math, sys, torch, torchxc\n"
        "g = torch.Generator().manual_seed(5)\n"
        "xs = [torch.randn(3, d, generator=g, dtype=torch.float64) * s for d in range(1, 71) for s in (0.1, 1, 30)]\n"
        "xs.append(torch.randn(4, 300, generator=g, dtype=torch.float64) * 1e-3)  # ~300 candidates per row\n"
        "xs.append(torch.randn(6, 128, generator=g, dtype=torch.float64) * 1e30)\n"
        "m = torch.randn(5, 77, generator=g, dtype=torch.float64)\n"
        "m[torch.rand(5, 77, generator=g) < 0.6] = -math.inf; m[:, 3] = 0.5; m[4] = -math.inf; m[2, 9] = math.nan\n"
        "xs.append(m)\n"
        "gs = [torch.randn(x.shape, generator=g, dtype=torch.float64) for x in xs]\n"
        "out, back = [], []\n"
        "for dt in (torch.float32, torch.bfloat16, torch.float16):\n"
        "    out.append([torchxc.sparsemax(x.to(dt)) for x in xs])\n"
        "    back.append([torch.ops.torchxc.sparsemax_backward(gr.to(dt), p) for gr, p in zip(gs, out[-1])])\n"
        "torch.save((xs, gs, out, back), sys.argv[1])\n")
    base_env = {"TORCHXC_SPARSEMAX_NO_AVX512": "1"} if avx512 == "off" else {"TORCHXC_SPARSEMAX_NO_AVX512": ""}
    outs = outputs_without_and_with("TORCHXC_SPARSEMAX_NO_AVX2", code, base_env=base_env)
    xs, gs = outs[0][0], outs[0][1]
    for i, dtype in enumerate((torch.float32, torch.bfloat16, torch.float16)):
        eps = torch.finfo(dtype).eps
        for j, x in enumerate(xs):
            xd = x.to(dtype)
            ref, low = sparsemax_reference(xd), sparsemax_reference(xd, dtype=dtype)
            for avx2_or_portable in outs:
                p, back = avx2_or_portable[2][i][j], avx2_or_portable[3][i][j]
                check_against_reference(p, ref, low, dtype)
                ref_back = sparsemax_backward_reference(gs[j].to(dtype), p)
                assert max_err(back, ref_back) <= 2 * eps * max(1.0, float(ref_back.nan_to_num().abs().max()))
            assert max_err(outs[0][2][i][j], outs[1][2][i][j]) <= 4 * eps


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_noncontiguous_and_empty(device):
    base = make_input((6, 40, 9), torch.float32, device)
    views = [base.transpose(0, 2), base[:, ::3], base[::2, :, 1:8:2], base.permute(1, 2, 0)]
    for v in views:
        assert not v.is_contiguous()
        for dim in range(v.dim()):
            check_against_reference(torchxc.sparsemax(v, dim), sparsemax_reference(v, dim), None, torch.float32)
    for shape, dim in [((0, 5), -1), ((5, 0), -1), ((0,), 0), ((3, 0, 4), 0), ((3, 0, 4), 2)]:
        x = torch.empty(shape, device=device)
        out = torchxc.sparsemax(x, dim)
        assert out.shape == x.shape
    scalar = torch.tensor(3.5, device=device)
    assert torchxc.sparsemax(scalar).item() == 1.0
    assert torchxc.sparsemax(scalar, 0).shape == ()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
@pytest.mark.parametrize("shape,dim", [((7, 31), -1), ((4, 1025), 0), ((3, 5, 7), 1), ((2, 40000), -1),
                                       ((2, 2 ** 17 + 1), -1)])
def test_backward_matches_reference(device, dtype, shape, dim):
    x = make_input(shape, dtype, device).requires_grad_(True)
    g = make_input(shape, dtype, device, seed=1)
    out = torchxc.sparsemax(x, dim)
    (grad,) = torch.autograd.grad(out, x, g)
    ref = sparsemax_backward_reference(g, sparsemax_reference(x, dim), dim)
    if dtype in (torch.float32, torch.float64):
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        assert max_err(grad, ref) <= tol * max(1.0, float(ref.abs().max()))
    else:  # the plain computation in low precision: same formula in that dtype
        s = (sparsemax_reference(x, dim, dtype=dtype) > 0).to(dtype)
        plain = s * (g - (g * s).sum(dim, keepdim=True) / s.sum(dim, keepdim=True))
        check_against_reference(grad, ref, plain, dtype)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_backward_nan_and_masks(device):
    x = torch.tensor([[0.0, -math.inf, 1.0, 0.5], [math.nan, 0.0, 1.0, 2.0]], device=device, requires_grad=True)
    out = torchxc.sparsemax(x)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out), retain_graph=True)
    assert (grad[0] == 0).all()  # a constant upstream gradient has no effect on a distribution
    assert grad[1].isnan().all()  # NaN rows propagate NaN
    # row 0 is [0, 0, 0.75, 0.25] (support {2, 3}): g - mean over the support there, 0 off it (the -inf entry too)
    (grad,) = torch.autograd.grad(out, x, torch.tensor([[1.0, 2.0, 3.0, 5.0], [0.0, 0.0, 0.0, 0.0]], device=device))
    assert grad[0].tolist() == [0.0, 0.0, -1.0, 1.0]


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_gradcheck(device):
    for shape, dim in [((4, 7), -1), ((3, 5, 6), 1), ((6,), 0)]:
        x = make_input(shape, torch.float64, device, scale=2.0).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t: torchxc.sparsemax(t, dim), (x,))
        assert torch.autograd.gradgradcheck(lambda t: torchxc.sparsemax(t, dim), (x,))


def sample_inputs(device, requires_grad):
    for shape, dim, dtype in [((4, 7), -1, torch.float32), ((3, 5, 6), 1, torch.float64), ((2, 3), 0, torch.float32),
                              ((5, 1100), -1, torch.float32)]:
        x = make_input(shape, dtype, device).requires_grad_(requires_grad)
        yield x, dim


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_opcheck(device):
    for requires_grad in (False, True):
        for x, dim in sample_inputs(device, requires_grad):
            torch.library.opcheck(torch.ops.torchxc.sparsemax.default, (x, dim))
            out = torchxc.sparsemax(x.detach(), dim)
            g = torch.randn_like(out).requires_grad_(requires_grad)
            torch.library.opcheck(torch.ops.torchxc.sparsemax_backward.default, (g, out, dim))


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def f(x):
        return (torchxc.sparsemax(x * 2.0, dim=1) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True)
    x = make_input((8, 33, 3), torch.float32, device).requires_grad_(True)
    (g_eager,) = torch.autograd.grad(f(x), x)
    val = compiled(x)
    (g_comp,) = torch.autograd.grad(val, x)
    assert max_err(val, f(x)) < 1e-5
    assert max_err(g_comp, g_eager) < 1e-5


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_matches_entmax(device, dtype):
    entmax = pytest.importorskip("entmax")
    for shape in [(16, 10), (8, 1000), (2, 50000)]:
        x = make_input(shape, dtype, device, scale=3.0)
        tol = 1e-6 if dtype == torch.float32 else 1e-12
        assert max_err(torchxc.sparsemax(x), entmax.sparsemax(x, -1)) < tol
        assert max_err(torchxc.sparsemax(x, 0), entmax.sparsemax(x, 0)) < tol


def test_result_independent_of_thread_count():
    """One thread: rows one after another; eight threads (more than the 4 long rows): each row split across
    threads. The forward gives the same bits (the threshold comes from the same candidates); the backward's
    support sum is added in another order (chunks), so it agrees to rounding, and each thread count repeats its
    own bits."""
    x = make_input((4, 300000), torch.float32, "cpu", scale=0.01)  # many candidates
    y = make_input((500, 700), torch.float32, "cpu")
    g = make_input((4, 300000), torch.float32, "cpu", seed=1)
    with num_threads(1):
        a, b = torchxc.sparsemax(x), torchxc.sparsemax(y)
        ga = torch.ops.torchxc.sparsemax_backward(g, a)
    with num_threads(8):
        assert torch.equal(a, torchxc.sparsemax(x)) and torch.equal(b, torchxc.sparsemax(y))
        gb = torch.ops.torchxc.sparsemax_backward(g, a)
        assert torch.equal(gb, torch.ops.torchxc.sparsemax_backward(g, a))
    assert max_err(ga, gb) <= 1e-6 * float(ga.abs().max()) and not torch.equal(ga, torch.zeros_like(ga))


def test_long_row_path_matches_reference():
    """Rows split across threads (fewer rows than threads): forward and backward against the reference, with
    masked chunks, a row masked except two entries, and a NaN row."""
    x = make_input((4, 2 ** 17 + 1), torch.float32, "cpu", scale=0.01)
    x[1, : 2 ** 16 + 5] = -math.inf  # whole chunks masked
    x[2] = -math.inf
    x[2, [7, 100000]] = torch.tensor([0.3, 0.1])
    x[3, 12345] = math.nan
    g = make_input(x.shape, torch.float32, "cpu", seed=1)
    with num_threads(8):
        out = torchxc.sparsemax(x)
        back = torch.ops.torchxc.sparsemax_backward(g, out)
    check_against_reference(out, sparsemax_reference(x), None, torch.float32)
    assert torch.allclose(out[2, [7, 100000]], torch.tensor([0.6, 0.4])) and out[2].count_nonzero() == 2
    ref_back = sparsemax_backward_reference(g, out)
    assert max_err(back, ref_back) <= 1e-5 * max(1.0, float(ref_back.nan_to_num().abs().max()))


def test_nn_module():
    m = torchxc.nn.Sparsemax(dim=0)
    x = make_input((5, 3), torch.float32, "cpu")
    assert torch.equal(m(x), torchxc.sparsemax(x, 0))
    assert "dim=0" in repr(m)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_bad_input_errors(device):
    with pytest.raises(RuntimeError, match=r"torchxc::sparsemax: expected input of dtype float16, bfloat16, "
                                           r"float32 or float64, but got Long"):
        torchxc.sparsemax(torch.ones(3, dtype=torch.long, device=device))
    with pytest.raises(IndexError, match=r"torchxc::sparsemax: dim must be in \[-2, 1\].*got dim=2"):
        torch.ops.torchxc.sparsemax(torch.ones(2, 3, device=device), 2)
    p = torchxc.sparsemax(torch.ones(2, 3, device=device))
    with pytest.raises(RuntimeError, match=r"sparsemax_backward: expected grad_output of shape \[2, 3\]"):
        torch.ops.torchxc.sparsemax_backward(torch.ones(3, 2, device=device), p, -1)
    with pytest.raises(RuntimeError, match=r"sparsemax_backward: expected grad_output and output of the same dtype"):
        torch.ops.torchxc.sparsemax_backward(torch.ones(2, 3, device=device, dtype=torch.float64), p, -1)


@requires_cuda
def test_cuda_device_mismatch():
    p = torchxc.sparsemax(torch.ones(2, 3, device="cuda"))
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.torchxc.sparsemax_backward(torch.ones(2, 3), p, -1)


@requires_cuda
def test_cuda_stream_semantics():
    # The op runs on the current stream and never synchronises the host.
    x = make_input((4096, 1024), torch.float32, "cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = torchxc.sparsemax(x)
    s.synchronize()
    assert max_err(y, sparsemax_reference(x)) < 2e-6
    graph = torch.cuda.CUDAGraph()  # capturable: no host synchronisation, no allocation outside the pool
    with torch.cuda.graph(graph):
        z = torchxc.sparsemax(x)
    x.copy_(make_input((4096, 1024), torch.float32, "cuda", seed=5))
    graph.replay()
    torch.cuda.synchronize()
    assert max_err(z, sparsemax_reference(x)) < 2e-6


# ---- properties (hypothesis) -----------------------------------------------------------------------------------

finite_rows = hnp.arrays(
    dtype="float64",
    shape=st.tuples(st.integers(1, 6), st.integers(1, 70)),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=150, deadline=None)
@given(finite_rows, st.floats(-1e3, 1e3), st.sampled_from([torch.float32, torch.float64]))
def test_properties_simplex_projection(arr, shift, dtype):
    x = torch.from_numpy(arr).to(dtype)
    p = torchxc.sparsemax(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    # a probability distribution
    assert (p >= 0).all()
    assert torch.allclose(p.double().sum(-1), torch.ones(p.shape[0], dtype=torch.float64), atol=tol)
    # KKT conditions of argmin ||p - x||^2 over the simplex: p = max(x - tau, 0) for a single tau per row
    xd, pd = x.double(), p.double()
    scale = 1 + xd.abs().amax(-1)
    support = pd > 0
    tau = ((xd - pd) * support).sum(-1) / support.sum(-1)
    assert (((xd - pd - tau[:, None]).abs() * support).amax(-1) <= tol * scale).all()  # on the support
    assert ((xd - tau[:, None]) * ~support <= tol * scale[:, None]).all()  # off it, below the threshold
    # invariant to adding a constant (exactly representable shifts keep the row's gaps exact)
    c = float(torch.tensor(shift).to(dtype).round())
    q = torchxc.sparsemax(x + c)
    same = (x + c) - c == x
    if same.all():
        assert max_err(q, p) <= 20 * tol


@settings(max_examples=60, deadline=None)
@given(finite_rows)
def test_property_matches_reference(arr):
    x = torch.from_numpy(arr)
    assert max_err(torchxc.sparsemax(x), sparsemax_reference(x)) < 1e-12


@requires_cuda
@settings(max_examples=60, deadline=None)
@given(finite_rows)
def test_property_cuda_matches_cpu(arr):
    x = torch.from_numpy(arr).float()
    assert max_err(torchxc.sparsemax(x.cuda()), torchxc.sparsemax(x)) < 2e-6


def test_dim_must_be_an_int():
    """dim=True ran as dim=1 (the schema's int takes a bool); dim out of range is an IndexError in every mode, as in
    torch.softmax (the kernels raised RuntimeError, the fake kernel IndexError)."""
    x = torch.randn(3, 4)
    for bad, kind in ((True, "bool"), (1.0, "float"), ("sum", "str"), (None, "NoneType")):
        with pytest.raises(TypeError, match=f"torchxc.sparsemax: dim must be an int, got {kind}"):
            torchxc.sparsemax(x, bad)
        with pytest.raises(TypeError, match=f"Sparsemax: dim must be an int, got {kind}"):
            torchxc.nn.Sparsemax(bad)  # refused when built, not at the first forward
    np = pytest.importorskip("numpy")
    assert torch.equal(torchxc.sparsemax(x, np.int64(0)), torchxc.sparsemax(x, 0))
    assert torch.equal(torchxc.sparsemax(x, torch.tensor(0)), torchxc.sparsemax(x, 0))
    with pytest.raises(IndexError, match=r"torchxc::sparsemax: dim must be in \[-2, 1\]"):
        torchxc.sparsemax(x, 2)
    # torch 2.11's Dynamo wraps the fake kernel's IndexError in a TorchRuntimeError (2.13 lets it through)
    with pytest.raises((IndexError, torch._dynamo.exc.TorchRuntimeError),
                       match=r"torchxc.sparsemax: dim must be in \[-2, 1\], got -3"):
        torch.compile(torchxc.sparsemax, fullgraph=True)(x, -3)
