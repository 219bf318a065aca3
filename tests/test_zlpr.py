"""torchxc.zlpr_loss / zlpr_loss_sparse against a float64 reference written with plain logsumexp.

Reference (Su et al., arXiv 2208.02955), per row, classes last:
    L = logsumexp([0] + [s_i + log(1 - t_i) : i valid, t_i < 1]) + logsumexp([0] + [-s_i + log(t_i) : i valid, t_i > 0])
where a class is valid when its mask is True and its score is not -inf. Gradients come from autograd on it.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchxc
from testing import (CUDA_PATHS, check_against_reference, devices, device_ids, dtypes, max_err, num_threads,
                     requires_cuda, use_cuda_path)

NEG_INF = -math.inf


def zlpr_reference(s, t, mask=None, dtype=torch.float64):
    """ZLPR computed in `dtype` with explicit masks (float64 for the reference; the input's dtype gives the plain
    PyTorch computation of the low-precision tolerance rule)."""
    s = s.to(dtype)
    t = t.to(dtype)
    valid = s != NEG_INF
    if mask is not None:
        valid = valid & mask.to(s.device).expand(s.shape)
    ninf = torch.full_like(s, NEG_INF)
    a = torch.where(valid & (t < 1), s + torch.log1p(-t.clamp(max=1)), ninf)
    b = torch.where(valid & (t > 0), -s + torch.log(t.clamp(min=0)), ninf)
    zeros = torch.zeros_like(s[..., :1])
    return torch.logsumexp(torch.cat([a, zeros], -1), -1) + torch.logsumexp(torch.cat([b, zeros], -1), -1)


def bert4keras_zlpr(y_pred, y_true):
    """The widely copied hard-label formula (bert4keras' multilabel_categorical_crossentropy), ported to PyTorch."""
    y_true = y_true.to(y_pred.dtype)
    y_pred = (1 - 2 * y_true) * y_pred
    y_pred_neg = y_pred - y_true * 1e12
    y_pred_pos = y_pred - (1 - y_true) * 1e12
    zeros = torch.zeros_like(y_pred[..., :1])
    y_pred_neg = torch.cat([y_pred_neg, zeros], dim=-1)
    y_pred_pos = torch.cat([y_pred_pos, zeros], dim=-1)
    return torch.logsumexp(y_pred_neg, dim=-1) + torch.logsumexp(y_pred_pos, dim=-1)


def dense_to_positives(t):
    """Padded positive lists [..., P] (-1 padding) for a bool target [..., C]."""
    flat = t.reshape(-1, t.shape[-1])
    P = max(1, int(flat.sum(-1).max()) if flat.numel() else 1)
    pos = torch.full((flat.shape[0], P), -1, dtype=torch.long)
    for r in range(flat.shape[0]):
        idx = flat[r].nonzero().flatten()
        pos[r, : len(idx)] = idx
    return pos.reshape(*t.shape[:-1], P)


def make_case(shape, dtype, device, kind="hard", seed=0, scale=3.0, density=0.2):
    gen = torch.Generator().manual_seed(seed)
    s = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    hard = torch.rand(shape, generator=gen) < density
    if kind == "hard":
        t = hard
    else:  # soft, with exact 0 and 1 entries
        t = torch.rand(shape, generator=gen, dtype=torch.float64)
        t = torch.where(torch.rand(shape, generator=gen) < 0.3, hard.double(), t).to(dtype)
    return s.to(device), t.to(device)


SHAPES = [(1, 1), (7, 5), (3, 1025), (2, 3, 17), (2, 40000), (1, 2 ** 20 + 3)]


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("masked", [False, True])
def test_loss_and_gradient_match_reference(device, dtype, kind, shape, masked):
    s, t = make_case(shape, dtype, device, kind)
    mask = None
    if masked:  # a per-element mask on even shapes, a class mask on odd ones
        gen = torch.Generator().manual_seed(7)
        mshape = shape if shape[-1] % 2 == 0 else shape[-1:]
        mask = (torch.rand(mshape, generator=gen) < 0.8).to(device)
    ref = zlpr_reference(s, t, mask)
    s = s.requires_grad_(True)
    loss = torchxc.zlpr_loss(s, t, mask, reduction="none")
    assert loss.shape == shape[:-1] and loss.dtype == dtype
    check_against_reference(loss, ref, zlpr_reference(s.detach(), t, mask, dtype=dtype), dtype)
    w = torch.randn(shape[:-1], generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(device)
    (grad,) = torch.autograd.grad(loss, s, w.to(dtype))
    sr = s.detach().double().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(zlpr_reference(sr, t, mask), sr, w)
    sl = s.detach().clone().requires_grad_(True)
    (grad_plain,) = torch.autograd.grad(zlpr_reference(sl, t, mask, dtype=dtype), sl, w.to(dtype))
    check_against_reference(grad, grad_ref, grad_plain, dtype)
    if kind == "hard" and dtype in (torch.float32, torch.float64):
        # with hard labels each gradient entry is one term (no cancellation): every entry to a relative error, not
        # only to the absolute one the largest entry sets (which lets long rows' small entries be anything)
        nz = grad_ref != 0
        rel = ((grad.double() - grad_ref).abs()[nz] / grad_ref.abs()[nz]).max().item() if nz.any() else 0.0
        assert rel <= (1e-5 if dtype == torch.float32 else 1e-13) and bool((grad[~nz] == 0).all())


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_matches_bert4keras_formula(device):
    s, t = make_case((16, 50), torch.float64, device)
    assert max_err(torchxc.zlpr_loss(s, t, reduction="none"), bert4keras_zlpr(s, t)) < 1e-12
    s = s.requires_grad_(True)
    (g,) = torch.autograd.grad(torchxc.zlpr_loss(s, t, reduction="sum"), s)
    (g_ref,) = torch.autograd.grad(bert4keras_zlpr(s, t).sum(), s)
    assert max_err(g, g_ref) < 1e-12


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_fitted_model_has_tiny_loss(device, dtype):
    # A correct positive at s = 25 costs log(1 + e^-25) ~ 1.4e-11, not the 8.9 of epsilon-clipped soft labels.
    # (float16 cannot hold 1.4e-11 and rounds it to 0.)
    lo = 0.0 if dtype == torch.float16 else 1e-12
    s = torch.tensor([[25.0, -25.0, -30.0]], dtype=dtype, device=device)
    for t in (torch.tensor([[True, False, False]], device=device), torch.tensor([[1.0, 0.0, 0.0]], dtype=dtype,
                                                                                 device=device)):
        loss = torchxc.zlpr_loss(s, t, reduction="none").double().item()
        assert lo <= loss < 1e-10
    pos = torch.tensor([[0, -1]], device=device)
    assert lo <= torchxc.zlpr_loss_sparse(s, pos, reduction="none").double().item() < 1e-10


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
def test_extreme_magnitudes_and_masks(device, dtype):
    big = {torch.float16: 2e4, torch.bfloat16: 1e4, torch.float32: 1e4, torch.float64: 1e4}[dtype]  # loss ~ 2 big
    s = torch.tensor([[big, -big, 3.0, NEG_INF, 0.5],
                      [-big, big, 0.0, 1.0, NEG_INF],
                      [NEG_INF] * 5],
                     dtype=torch.float64).to(dtype).to(device)
    t = torch.tensor([[1, 0, 0, 1, 0], [1, 0, 1, 0, 0], [1, 0, 1, 0, 0]], dtype=torch.bool, device=device)
    loss = torchxc.zlpr_loss(s, t, reduction="none")
    ref = zlpr_reference(s, t)
    assert torch.isfinite(loss).all()
    rel = ((loss.double() - ref).abs() / ref.abs().clamp(min=1)).max()
    assert rel < {torch.float16: 2e-3, torch.bfloat16: 8e-3}.get(dtype, 1e-6)
    assert loss[2] == 0  # every class masked by -inf: log(1) + log(1)
    # -inf scores behave exactly like masked classes
    mask = s != NEG_INF
    s_masked = torch.where(mask, s, torch.zeros_like(s))
    assert torch.equal(torchxc.zlpr_loss(s_masked, t, mask, reduction="none"), loss)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("shape", [(6, 9), (3, 1025), (2, 40000), (1, 2 ** 20 + 3), (2, 3, 33)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_sparse_equals_dense(device, shape, dtype):
    s, t = make_case(shape, dtype, device, density=0.01 if shape[-1] > 1000 else 0.3)
    if t.numel() > shape[-1]:  # not the only row: (1, 2^20 + 3) is the long-row path, whose chunks need positives
        t.view(-1, shape[-1])[0] = False  # a row without positives
    pos = dense_to_positives(t.cpu())
    pos = torch.cat([pos, pos[..., :1]], -1).to(device)  # a duplicate entry per row (counted once), and -1 padding
    mask = (torch.rand(shape[-1], generator=torch.Generator().manual_seed(2)) < 0.9).to(device)
    for m in (None, mask):
        sd = s.clone().requires_grad_(True)
        ss = s.clone().requires_grad_(True)
        ld = torchxc.zlpr_loss(sd, t, m, reduction="none")
        ls = torchxc.zlpr_loss_sparse(ss, pos, m, reduction="none")
        assert torch.equal(ld, ls)
        (gd,) = torch.autograd.grad(ld.sum(), sd)
        (gs,) = torch.autograd.grad(ls.sum(), ss)
        assert torch.equal(gd, gs)


@requires_cuda
@pytest.mark.parametrize("path", list(CUDA_PATHS))
@pytest.mark.parametrize("shape", [(3, 5000), (2, 8193), (5, 20000), (2, 40000)], ids=str)
@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_cuda_row_paths(monkeypatch, path, shape, kind, dtype):
    """Each CUDA path (cooperative chunks, register rows, split rows) on rows the default would send elsewhere:
    loss and gradient against the float64 reference, masked, and the sparse form equal to the dense one."""
    use_cuda_path(monkeypatch, path)
    test_loss_and_gradient_match_reference("cuda", dtype, kind, shape, masked=True)
    if kind == "hard":
        test_sparse_equals_dense("cuda", shape, dtype)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_sparse_stable_when_all_positives_fit(device):
    # the log(1 - e^x) formulation returns NaN here; the exact exclusion gives the tiny true loss
    C = 1000
    s = torch.full((2, C), -30.0, device=device)
    s[:, :5] = 30.0
    pos = torch.tensor([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]], device=device)
    loss = torchxc.zlpr_loss_sparse(s, pos, reduction="none").double()
    expected = math.log1p((C - 5) * math.exp(-30.0)) + math.log1p(5 * math.exp(-30.0))
    assert torch.allclose(loss, torch.full_like(loss, expected), rtol=1e-5, atol=0)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_reductions_and_nan_rows(device):
    s, t = make_case((5, 8), torch.float64, device)
    none = torchxc.zlpr_loss(s, t, reduction="none")
    assert torch.allclose(torchxc.zlpr_loss(s, t), none.mean())
    assert torch.allclose(torchxc.zlpr_loss(s, t, reduction="sum"), none.sum())
    s[1, 2] = math.nan
    s.requires_grad_(True)
    loss = torchxc.zlpr_loss(s, t, reduction="none")
    assert loss[1].isnan() and not loss[[0, 2, 3, 4]].isnan().any()
    (g,) = torch.autograd.grad(loss.sum(), s)
    assert g[1].isnan().all() and not g[[0, 2, 3, 4]].isnan().any()


@settings(max_examples=60, deadline=None)
@given(st.floats(0.001, 0.999))
def test_soft_label_optimum_is_sigmoid_2s(t):
    # the per-class optimum of the soft-label loss is t = sigmoid(2 s)
    s = torch.tensor([[0.5 * math.log(t / (1 - t))]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(torchxc.zlpr_loss(s, torch.tensor([[t]], dtype=torch.float64)), s)
    assert abs(g.item()) < 1e-12
    assert abs(torchxc.zlpr_probs(s.detach(), soft=True).item() - t) < 1e-12


def test_probs_and_decision_rule():
    s = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.allclose(torchxc.zlpr_probs(s), torch.sigmoid(s))
    assert torch.allclose(torchxc.zlpr_probs(s, soft=True), torch.sigmoid(2 * s))
    assert torch.equal(torchxc.zlpr_probs(s) > 0.5, s > 0)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_gradcheck(device):
    for kind in ("hard", "soft"):
        s, t = make_case((4, 9), torch.float64, device, kind, seed=5)
        mask = torch.rand(9, generator=torch.Generator().manual_seed(1)).to(device) < 0.7
        for m in (None, mask):
            assert torch.autograd.gradcheck(lambda x: torchxc.zlpr_loss(x, t, m, "none"), (s.requires_grad_(),))
    s, t = make_case((3, 11), torch.float64, device, seed=6)
    pos = dense_to_positives(t.cpu()).to(device)
    assert torch.autograd.gradcheck(lambda x: torchxc.zlpr_loss_sparse(x, pos, reduction="mean"),
                                    (s.requires_grad_(),))


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_opcheck(device):
    for shape in [(5, 7), (2, 3, 1100)]:
        for kind in ("hard", "soft"):
            s, t = make_case(shape, torch.float32, device, kind)
            for mask in (None, (torch.rand(shape[-1]) < 0.5).to(device), (torch.rand(shape) < 0.5).to(device)):
                for requires_grad in (False, True):
                    x = s.clone().requires_grad_(requires_grad)
                    torch.library.opcheck(torch.ops.torchxc.zlpr_loss.default, (x, t, mask, requires_grad))
        s, t = make_case(shape, torch.float32, device)
        pos = dense_to_positives(t.cpu()).to(device)
        for requires_grad in (False, True):
            x = s.clone().requires_grad_(requires_grad)
            torch.library.opcheck(torch.ops.torchxc.zlpr_loss_sparse.default, (x, pos, None, requires_grad))


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_op_autograd_contract(device):
    # The op's second output (the gradient stored for the backward) carries no gradient of its own; a backward
    # through an op called with compute_grad=False is an error, not a silent zero.
    s, t = make_case((4, 9), torch.float32, device)
    x = s.clone().requires_grad_(True)
    loss, grad = torch.ops.torchxc.zlpr_loss.default(x, t, None, True)
    assert loss.requires_grad and not grad.requires_grad
    (g,) = torch.autograd.grad(loss.sum(), x)
    torch.testing.assert_close(g, grad)
    loss, _ = torch.ops.torchxc.zlpr_loss.default(x, t, None, False)
    with pytest.raises(RuntimeError, match="torchxc::zlpr_loss: backward needs the gradient"):
        loss.sum().backward()
    pos = dense_to_positives(t.cpu()).to(device)
    loss, _ = torch.ops.torchxc.zlpr_loss_sparse.default(x, pos, None, False)
    with pytest.raises(RuntimeError, match="torchxc::zlpr_loss_sparse: backward needs the gradient"):
        loss.sum().backward()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def f(x, t, pos):
        return torchxc.zlpr_loss(x * 2.0, t) + torchxc.zlpr_loss_sparse(x, pos, reduction="sum")

    compiled = torch.compile(f, fullgraph=True)
    s, t = make_case((8, 30), torch.float32, device)
    pos = dense_to_positives(t.cpu()).to(device)
    x = s.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x, t, pos), x)
    (gc,) = torch.autograd.grad(compiled(x, t, pos), x)
    assert max_err(g, gc) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_result_independent_of_thread_count(dtype, kind):
    """One thread: rows one after another; eight threads (more than the 3 rows): each row split across threads.
    Both sum each row in the same chunks and merge them in chunk order: bit-identical losses and gradients."""
    s, t = make_case((3, 300000), dtype, "cpu", kind=kind, density=0.001)
    op = torch.ops.torchxc.zlpr_loss.default
    with num_threads(1):
        a, ga = op(s, t, None, True)
    with num_threads(8):
        c, gc = op(s, t, None, True)
        assert torch.equal(c, op(s, t, None, False)[0])  # the loss does not depend on the gradient being wanted
    assert torch.equal(a, c) and torch.equal(ga, gc)
    if kind == "hard":
        pos = dense_to_positives(t)
        with num_threads(8):
            assert torch.equal(c, torchxc.zlpr_loss_sparse(s, pos, reduction="none"))
        with num_threads(1):
            assert torch.equal(a, torchxc.zlpr_loss_sparse(s, pos, reduction="none"))
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert max_err(c, zlpr_reference(s, t)) < tol * float(a.abs().max())


def test_nn_module():
    s, t = make_case((4, 6), torch.float32, "cpu")
    assert torch.equal(torchxc.nn.ZLPRLoss()(s, t), torchxc.zlpr_loss(s, t))
    pos = dense_to_positives(t)
    assert torch.equal(torchxc.nn.ZLPRLoss(reduction="sum", sparse=True)(s, pos),
                       torchxc.zlpr_loss_sparse(s, pos, reduction="sum"))
    assert "sparse=True" in repr(torchxc.nn.ZLPRLoss(sparse=True))


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_bad_input_errors(device):
    s = torch.randn(4, 5, device=device)
    t = torch.rand(4, 5, device=device) < 0.5
    with pytest.raises(RuntimeError, match=r"torchxc::zlpr_loss: expected target of the input's shape \[4, 5\], "
                                           r"but got \[4, 6\]"):
        torchxc.zlpr_loss(s, torch.zeros(4, 6, dtype=torch.bool, device=device))
    with pytest.raises(RuntimeError, match="expected target of dtype bool"):
        torch.ops.torchxc.zlpr_loss(s, t.double(), None, False)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        torchxc.zlpr_loss(s, t, torch.ones(5, device=device))
    with pytest.raises(ValueError, match="does not broadcast"):
        torchxc.zlpr_loss(s, t, torch.ones(3, dtype=torch.bool, device=device))
    with pytest.raises(ValueError, match="reduction must be one of"):
        torchxc.zlpr_loss(s, t, reduction="avg")
    with pytest.raises(RuntimeError, match=r"expected positives of shape \[4, P\]"):
        torchxc.zlpr_loss_sparse(s, torch.zeros(5, 2, dtype=torch.long, device=device))
    with pytest.raises(RuntimeError, match="expected input of dtype"):
        torchxc.zlpr_loss(s.long(), t)


def test_bad_label_values_cpu():
    s = torch.randn(4, 5)
    with pytest.raises(RuntimeError, match=r"labels must lie in \[0, 1\], but row 0 has 5 outside, the first 1.5 "):
        torchxc.zlpr_loss(s, torch.full((4, 5), 1.5))
    with pytest.raises(RuntimeError, match=r"labels must lie in \[0, 1\], but row 0 has 5 outside, the first 2 "):
        torchxc.zlpr_loss(s, torch.full((4, 5), 2, dtype=torch.long))  # integer labels must be 0 or 1
    # labels outside [0, 1] that a cast to the input's dtype would round into it (float16: 1.0004 -> 1, -1e-30 -> -0)
    bad = torch.zeros(2, 3, 4)
    bad[1, 2, 1], bad[1, 2, 3] = 1.0004, -1e-30
    for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        with pytest.raises(RuntimeError, match=r"zlpr_loss: labels must lie in \[0, 1\], but row 5 has 2 outside, "
                                               r"the first 1.0004 \(class 1\)"):
            torchxc.zlpr_loss(torch.randn(2, 3, 4, dtype=dt), bad)
    # the same labels where nothing data-dependent may run (vmap; torch.compile likewise): they reach the op as the
    # nearest value on their own side of [0, 1], which it refuses
    with pytest.raises(RuntimeError, match=r"labels must lie in \[0, 1\], but row 2 has 2 outside, the first 1.00"):
        torch.vmap(torchxc.zlpr_loss)(torch.randn(2, 3, 4, dtype=torch.float16), bad)
    # the fused loss names the row of the whole batch, not of a chunk (NaN counts as outside)
    h, w = torch.randn(70, 4), torch.randn(5, 4)
    t = torch.rand(70, 5)
    t[65, 3] = 1.5
    nan_t = torch.rand(70, 5)
    nan_t[65, 3] = math.nan
    for lab in (t, t.double(), (2 * t).long(), nan_t):
        with pytest.raises(RuntimeError, match=r"fused_linear_zlpr_loss: labels must lie in \[0, 1\], but row 65 "):
            torchxc.fused_linear_zlpr_loss(h, w, None, lab, chunk_size=16)
    s = torch.randn(4, 5)
    with pytest.raises(RuntimeError, match="positive class index 5 is out of range for 5 classes"):
        torchxc.zlpr_loss_sparse(s, torch.tensor([[0], [5], [1], [2]]))
    with pytest.raises(RuntimeError, match="positive class index -2 is out of range"):
        torchxc.zlpr_loss_sparse(s, torch.tensor([[0], [-2], [1], [2]]))


def test_soft_labels_of_another_dtype_under_compile_export_and_vmap():
    """The range handling of labels of another dtype is traceable: no data-dependent Python (it broke
    torch.compile(fullgraph=True), torch.export and vmap once)."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 9, generator=g)
    t = torch.rand(6, 9, generator=g, dtype=torch.float64)
    t[0, :3] = torch.tensor([0.0, 1.0, 1e-300], dtype=torch.float64)  # 1e-300 rounds to 0 in float32: kept > 0
    want = zlpr_reference(s.double(), t.float().double().clamp(min=torch.finfo(torch.float32).tiny).where(t > 0, 0))
    eager = torchxc.zlpr_loss(s, t, reduction="none")
    assert max_err(eager, want) < 1e-5
    compiled = torch.compile(lambda a, b: torchxc.zlpr_loss(a, b, reduction="none"), fullgraph=True, backend="eager")
    assert torch.equal(compiled(s, t), eager)

    class Loss(torch.nn.Module):
        def forward(self, a, b):
            return torchxc.zlpr_loss(a, b, reduction="none")

    ep = torch.export.export(Loss(), (s, t))
    assert torch.equal(ep.module()(s, t), eager)
    batched = torch.vmap(lambda a, b: torchxc.zlpr_loss(a, b, reduction="none"))(s[None], t[None])[0]
    assert torch.equal(batched, eager)
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    for mode in ("real", "fake"):  # make_fx and fake tensors trace too (no data-dependent check on them)
        gm = make_fx(lambda a, b: torchxc.zlpr_loss(a, b, reduction="none"), tracing_mode=mode)(s, t)
        assert torch.equal(gm(s, t), eager)
    fake_mode = FakeTensorMode()
    assert torchxc.zlpr_loss(fake_mode.from_tensor(s), fake_mode.from_tensor(t), reduction="none").shape == (6,)
    h, w = torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g)
    fused = torch.compile(lambda a, b: torchxc.fused_linear_zlpr_loss(a, w, None, b), fullgraph=True, backend="eager")
    for lab in (t.float(), t, (t > 0.5).long()):
        assert max_err(fused(h, lab), torchxc.zlpr_loss(h @ w.T, lab)) < 1e-5


@requires_cuda
def test_cuda_device_mismatch():
    with pytest.raises(RuntimeError, match="same device"):
        torchxc.zlpr_loss(torch.randn(4, 5, device="cuda"), torch.zeros(4, 5, dtype=torch.bool))


def test_input_handling_edge_cases():
    x = torch.randn(2, 6)
    multi_hot = torch.tensor([[0, 0, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    for bad in (multi_hot, torch.tensor([[2.9], [1.0]])):
        with pytest.raises(ValueError, match="positives must be integer class indices"):
            torchxc.zlpr_loss_sparse(x, bad)
    with pytest.raises(ValueError, match="no gradient with respect to the target"):
        torchxc.zlpr_loss(x, torch.rand(2, 6, requires_grad=True))
    with torch.no_grad():  # no gradient is being recorded: fine
        torchxc.zlpr_loss(x, torch.rand(2, 6, requires_grad=True))
    t = x > 0
    assert torchxc.zlpr_loss(x, t, mask=torch.tensor(True)).item() == pytest.approx(torchxc.zlpr_loss(x, t).item())
    with pytest.raises(TypeError, match="torchxc.zlpr_loss_sparse: mask must be a bool tensor"):
        torchxc.zlpr_loss_sparse(x, torch.tensor([[1, -1], [2, -1]]), mask=torch.ones(6, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="torchxc::zlpr_loss: expected target on cpu"):
        torchxc.zlpr_loss(x, torch.rand(2, 6, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_soft_labels_keep_both_terms_when_narrowed(dtype):
    """A float32 label 0.9999 (or 1e-30) rounds to 1 (or 0) in float16/bfloat16; it stays short of 1 (above 0),
    so the class keeps its place in both terms instead of being dropped from one."""
    x = torch.tensor([[8.0, -8.0, 0.1]], dtype=dtype)  # e^8 (1 - t) makes the first class's negative term count
    t = torch.tensor([[0.9999, 1e-30, 0.5]])
    one_below = 1 - torch.finfo(dtype).eps / 2
    want = zlpr_reference(x, torch.tensor([[one_below, torch.finfo(dtype).tiny, 0.5]], dtype=torch.float64))
    assert torchxc.zlpr_loss(x, t, reduction="none").double() == pytest.approx(want.item(), rel=1e-2)
    dropped = zlpr_reference(x, torch.tensor([[1.0, 0.0, 0.5]], dtype=torch.float64))
    assert abs(want.item() - dropped.item()) > 0.3  # the test tells the two apart


def test_soft_labels_keep_both_terms_between_16_bit_dtypes():
    """float16 and bfloat16 have the same width but round differently: float16 0.9995 is 1 in bfloat16, bfloat16
    1e-9 is 0 in float16. Either way the class must stay in both terms, as for a float32 target."""
    for x_dtype, t_dtype, t, s0 in ((torch.bfloat16, torch.float16, 0.9995, 8.0),
                                    (torch.float16, torch.bfloat16, 1e-9, -25.0)):
        x = torch.tensor([[s0, -8.0, 0.1]], dtype=x_dtype)  # |s0| large: the term the class would leave counts
        target = torch.tensor([[t, 0.5, 0.5]], dtype=t_dtype)
        got = torchxc.zlpr_loss(x, target, reduction="none")
        assert torch.equal(got, torchxc.zlpr_loss(x, target.float(), reduction="none"))
        dropped = zlpr_reference(x, torch.tensor([[round(t), 0.5, 0.5]], dtype=torch.float64))
        assert abs(got.double().item() - dropped.item()) > 0.5


def test_grad_scale_must_fit_the_compute_dtype():
    x, t = torch.randn(2, 4), torch.rand(2, 4) < 0.5
    with pytest.raises(RuntimeError, match="grad_scale 1e\\+39 is not a finite, non-zero float32"):
        torch.ops.torchxc.zlpr_loss(x, t, None, True, 1e39)
    with pytest.raises(RuntimeError, match="is not a finite, non-zero float32"):
        torch.ops.torchxc.zlpr_loss(x.half(), t, None, True, 1e-50)
    _, g = torch.ops.torchxc.zlpr_loss(x.double(), t, None, True, 1e39)  # float64 holds it
    assert torch.isfinite(g).all()


def test_vmap_then_backward():
    s = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    t = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0)) < 0.3
    pos = torch.tensor([[0, 2, -1]] * 4)
    for fn, lab in ((torchxc.zlpr_loss, t), (torchxc.zlpr_loss_sparse, pos.expand(3, 4, 3))):
        (g,) = torch.autograd.grad(torch.vmap(fn)(s, lab).sum(), s)
        (want,) = torch.autograd.grad(sum(fn(s[i], lab[i]) for i in range(3)), s)
        assert max_err(g, want) < 1e-15


def test_no_double_backward():
    h = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.rand(4, 5) < 0.4
    for loss in (lambda: torchxc.zlpr_loss(h @ w.T, t), lambda: torchxc.zlpr_loss_sparse(h @ w.T, dense_to_positives(t))):
        g, = torch.autograd.grad(loss(), h, create_graph=True)
        with pytest.raises(RuntimeError, match="double backward"):
            (g ** 2).sum().backward()


def test_second_derivatives_wrt_the_input_raise():
    """Differentiating a gradient with respect to the op's own input (autograd.grad(g, x), Hessians, Hessian-vector
    products) must raise, not fail with "not used in the graph" or come out as zeros (allow_unused)."""
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) < 0.4
    h = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    sampler = torchxc.TreeSampler.from_parameters(torch.randn(7, 5, dtype=torch.float64),
                                                  torch.zeros(7, dtype=torch.float64), 6)
    cases = {"torchxc::zlpr_loss:": (lambda a: torchxc.zlpr_loss(a, t), x),
             "torchxc::zlpr_loss_sparse:": (lambda a: torchxc.zlpr_loss_sparse(a, torch.tensor([[0, -1]] * 3)), x),
             "torchxc::sparsemax_loss:": (lambda a: torchxc.sparsemax_loss(a, torch.tensor([0, 1, 2])), x),
             "torchxc::tree_log_prob:": (lambda a: sampler.log_prob(a, torch.tensor([[1], [2], [5]])).sum(), x),
             "torchxc.fused_linear_zlpr_loss:": (lambda a: torchxc.fused_linear_zlpr_loss(a, w, None, t), h)}
    for name, (f, a) in cases.items():
        (g,) = torch.autograd.grad(f(a), a, create_graph=True)
        with pytest.raises(RuntimeError, match=name + " double backward"):
            torch.autograd.grad(g.sum(), a)
        with pytest.raises(RuntimeError, match=name + " double backward"):
            torch.autograd.functional.hessian(f, a)
        with pytest.raises(RuntimeError, match=name + " double backward"):
            torch.autograd.functional.hvp(f, a, torch.ones_like(a))


def test_noncontiguous_empty_and_broadcast_masks():
    s, t = make_case((5, 4, 9), torch.float64, "cpu", kind="soft")
    m = torch.rand(5, 1, 9, generator=torch.Generator().manual_seed(3)) < 0.7  # broadcast over the middle dim
    for perm in ((1, 0, 2), (0, 1, 2)):
        sv, tv = s.permute(*perm), t.permute(*perm)  # non-contiguous leading dims for (1, 0, 2)
        mv = m.permute(*perm)
        got = torchxc.zlpr_loss(sv, tv, mv, reduction="none")
        assert max_err(got, zlpr_reference(sv, tv, mv)) < 1e-12
    sv, tv = s[:, :, ::2], (t[:, :, ::2] > 0.5)  # strided class dim, hard labels
    assert max_err(torchxc.zlpr_loss(sv, tv, reduction="none"), zlpr_reference(sv, tv)) < 1e-12
    pos = dense_to_positives(tv)
    assert max_err(torchxc.zlpr_loss_sparse(sv, pos[..., ::1], reduction="none"), zlpr_reference(sv, tv)) < 1e-12
    for shape in ((0, 7), (3, 0), (2, 0, 5)):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        loss = torchxc.zlpr_loss(x, torch.zeros(shape, dtype=torch.bool), reduction="none")
        assert loss.shape == shape[:-1] and torch.equal(loss, torch.zeros(shape[:-1], dtype=torch.float64))
        loss.sum().backward()
        assert x.grad.shape == shape
    x = torch.randn(3, 6, dtype=torch.float64)
    assert max_err(torchxc.zlpr_loss_sparse(x, torch.empty(3, 0, dtype=torch.long), reduction="none"),
                   zlpr_reference(x, torch.zeros(3, 6, dtype=torch.bool))) < 1e-12  # P = 0: no positives


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("d", [11, 1000, 40000], ids=str)  # on CUDA: warp, block and split rows
def test_bool_labels_and_masks_read_any_nonzero_byte_as_true(device, d):
    """A bool tensor viewed from uint8 can hold bytes other than 0 and 1; every kernel reads such a byte as True
    (on CUDA the bytes are packed into bit masks, where a 2 must not set the neighbouring class's bit)."""
    gen = torch.Generator().manual_seed(d)
    s = torch.randn(4, d, generator=gen, dtype=torch.float64).float().to(device)
    t_bytes = torch.randint(0, 4, (4, d), generator=gen, dtype=torch.uint8) * (torch.rand(4, d, generator=gen) < 0.1)
    m_bytes = torch.randint(0, 4, (4, d), generator=gen, dtype=torch.uint8)
    t, m = t_bytes.to(device).view(torch.bool), m_bytes.to(device).view(torch.bool)
    got = torchxc.zlpr_loss(s, t, m, reduction="none")
    want = torchxc.zlpr_loss(s, (t_bytes != 0).to(device), (m_bytes != 0).to(device), reduction="none")
    assert torch.equal(got, want)

def test_extreme_scores_value_and_gradient():
    """Scores of +-1e30 (float32 and float64): finite losses equal to the reference, gradients 0 or +-1."""
    for dtype in (torch.float32, torch.float64):
        s = torch.tensor([[1e30, -1e30, 0.5, -2.0], [-1e30, 1e30, 3.0, 1e30]], dtype=dtype, requires_grad=True)
        t = torch.tensor([[True, False, True, False], [False, True, False, True]])
        loss = torchxc.zlpr_loss(s, t, reduction="sum")
        ref = zlpr_reference(s.detach(), t).sum()
        assert torch.isfinite(loss) and abs(loss.item() - ref.item()) <= 1e-6 * max(1.0, abs(ref.item()))
        loss.backward()
        s64 = s.detach().double().requires_grad_(True)
        zlpr_reference(s64, t).sum().backward()
        assert max_err(s.grad, s64.grad) < 1e-6


@pytest.mark.parametrize("loss", ["zlpr_loss", "sparsemax_loss"])
def test_backward_fills_no_zeros_for_the_extra_outputs(loss):
    """The ops' second outputs (zlpr's stored gradient, sparsemax_loss's row stats) carry no gradient; autograd
    must not fill zeros for them before each backward (for zlpr an input-sized memset: a quarter of the
    forward+backward time at 1024x32768 on the CPU before set_materialize_grads(false))."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(64, 300, requires_grad=True)
    target = torch.rand(64, 300) < 0.05 if loss == "zlpr_loss" else torch.randint(300, (64,))
    out = getattr(torchxc, loss)(x, target)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        g, = torch.autograd.grad(out, x)
    fills = [(e.name, e.input_shapes) for e in prof.events() if e.name in ("aten::zero_", "aten::fill_")]
    assert fills and all(math.prod(shapes[0]) == 1 for _, shapes in fills), fills  # only the scalar seed's ones
    ref = x.detach().clone().requires_grad_(True)
    getattr(torchxc, loss)(ref, target).backward()
    assert torch.equal(g, ref.grad)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
def test_backward_hands_on_the_stored_gradient(device, dtype):
    """A backward that frees the graph makes the stored gradient the input's gradient, with no input-sized multiply:
    a mean (grad_scale = 1 / rows, rounded as mean's backward rounds it; not for float16) or a sum seeded with 1
    hands it on untouched (on the CPU after a value test; on a GPU _zlpr_scale_grad_ finds on the device that no row
    needs scaling: no host sync), any other seed scales its rows in place. A backward that keeps the graph scales it
    into a new tensor, so that gradients of retained graphs never share memory."""
    from torch.profiler import ProfilerActivity, profile

    s, t = make_case((3 * 1021, 40), dtype, device)
    tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6

    def grad_and_ops(loss, **kw):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            (g,) = torch.autograd.grad(loss, x, **kw)
        big = [e.name for e in prof.events()
               if e.name in ("aten::mul", "aten::div") and e.input_shapes and list(e.input_shapes[0]) == list(s.shape)]
        return g, big, sum(e.name == "torchxc::_zlpr_scale_grad_" for e in prof.events())

    for reduction in ("mean", "sum"):
        xr = s.double().clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(zlpr_reference(xr, t).mean() if reduction == "mean"
                                     else zlpr_reference(xr, t).sum(), xr)
        x = s.clone().requires_grad_(True)
        loss = torchxc.zlpr_loss(x, t, reduction=reduction)
        want = zlpr_reference(s, t).mean() if reduction == "mean" else zlpr_reference(s, t).sum()
        assert max_err(loss, want) < tol * want.abs().item()
        g, big, scaled_in_place = grad_and_ops(loss)
        untouched = reduction == "sum" or dtype != torch.float16  # float16's mean is not folded into the kernel
        assert not big and scaled_in_place == (0 if untouched and device.type == "cpu" else 1), (big, scaled_in_place)
        assert max_err(g, ref) < tol * ref.abs().max().item()
        scaled, big, scaled_in_place = grad_and_ops(torchxc.zlpr_loss(x, t, reduction=reduction) * -3.0)
        assert not big and scaled_in_place == 1, (big, scaled_in_place)
        assert max_err(scaled, -3.0 * ref) < 3 * tol * ref.abs().max().item()
        loss = torchxc.zlpr_loss(x, t, reduction=reduction)
        first, big, scaled_in_place = grad_and_ops(loss, retain_graph=True)
        assert len(big) == 1 and not scaled_in_place, (big, scaled_in_place)  # grad * incoming, a new tensor
        first.mul_(2)  # a gradient of a kept graph is its own tensor
        (second,) = torch.autograd.grad(loss, x)
        assert torch.equal(first, 2 * second) and max_err(second, ref) < tol * ref.abs().max().item()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_batched_incoming_gradients(device):
    """A batch of incoming gradients (autograd.grad(..., is_grads_batched=True), jacobian(vectorize=True): legacy
    vmap) scales the stored gradient into a new tensor per batch entry, equal to one backward per entry; the backward
    does not treat the one buffer as its own there (on the CPU its value test failed under that vmap; on CUDA the
    in-place scaling has no batching rule)."""
    s, t = make_case((5, 7), torch.float64, device)
    x = s.clone().requires_grad_(True)
    pos = dense_to_positives(t.cpu()).to(device)
    for fn, lab in ((torchxc.zlpr_loss, t), (torchxc.zlpr_loss_sparse, pos)):
        for reduction in ("none", "mean", "sum"):
            loss = fn(x, lab, reduction=reduction)
            go = torch.randn(3, *loss.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
            (g,) = torch.autograd.grad(loss, x, go, is_grads_batched=True)
            want = torch.stack([torch.autograd.grad(fn(x, lab, reduction=reduction), x, go[i])[0] for i in range(3)])
            assert max_err(g, want) < 1e-15, (fn, reduction)
        jac = torch.autograd.functional.jacobian(lambda v: fn(v, lab, reduction="none"), x, vectorize=True)
        rows = torch.stack([torch.autograd.grad(fn(x, lab, reduction="none")[i], x)[0] for i in range(5)])
        assert max_err(jac, rows) < 1e-15


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_raw_op_second_output_is_the_gradient_buffer(device):
    """The raw op's second output is the buffer the backward owns: a backward that frees the graph scales its rows
    in place by their incoming gradient and hands it on (documented in csrc/schema.cpp); autograd copies it into
    .grad here, since the caller still holds it."""
    s, t = make_case((4, 6), torch.float32, device)
    x = s.clone().requires_grad_(True)
    loss, g = torch.ops.torchxc.zlpr_loss(x, t, None, True, 1.0)
    unscaled = g.clone()
    w = torch.tensor([1.0, -2.0, 0.5, 1.0], device=device)
    (loss * w).sum().backward()
    assert torch.equal(g, unscaled * w[:, None]) and torch.equal(x.grad, g)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
def test_scale_grad_in_place(device, dtype):
    """torchxc::_zlpr_scale_grad_ against a float64 product: rows whose incoming gradient is grad_scale keep their
    values (a NaN stays NaN), the others are multiplied by grad_loss / grad_scale; an
    expanded scalar, a non-contiguous grad_loss and a row longer than one CUDA block's share; bad arguments refused."""
    op = torch.ops.torchxc._zlpr_scale_grad_.default

    def same_values(a, b):  # exactly equal, NaN where NaN (the CPU multiplies these rows by 1: a NaN may change payload)
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)

    gen = torch.Generator().manual_seed(3)
    for shape in ((5, 7), (2, 3, 9000), (3, 1), (0, 4), (4, 0)):
        g0 = torch.randn(shape, generator=gen, dtype=torch.float64)
        if g0.numel():
            g0.view(-1, shape[-1])[0, 0] = math.nan
        scale = 0.375  # exact in every dtype, not a power of two: the factors round
        go = torch.full(shape[:-1], scale, dtype=torch.float64)
        flat = go.view(-1)
        flat[1::2] = torch.randn(flat[1::2].shape, generator=gen, dtype=torch.float64)
        g = g0.to(device=device, dtype=dtype)
        before = g.clone()
        op(g, go.to(device=device, dtype=dtype), scale)
        factor = go.to(dtype).double() / scale
        g, before = g.cpu(), before.cpu()
        want = before.double() * factor.unsqueeze(-1)
        keep = (factor == 1).unsqueeze(-1).expand(shape)
        same_values(g[keep], before[keep])
        # two roundings (the factor's and the product's; the CPU rounds a 16-bit factor to 16 bits, CUDA keeps
        # it in float32): 2 ulp, 2.5 for float32's quotient by a float32-rounded scale on CUDA
        tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 3e-7}.get(dtype, 5e-16)
        assert torch.allclose(g.double(), want, rtol=tol, atol=0, equal_nan=True)
        before = before.to(device)
        g = before.clone()  # one value for every row, given as an expanded 0-d tensor: nothing to do
        op(g, torch.tensor(scale, dtype=dtype, device=device).expand(shape[:-1]), scale)
        same_values(g, before)
    g = torch.ones(4, 6, dtype=dtype, device=device)
    op(g, torch.tensor([[1.0, 2.0], [2.0, 3.0], [1.0, 4.0], [5.0, 5.0]], dtype=dtype, device=device)[:, 0], 1.0)
    assert g[:, 0].tolist() == [1.0, 2.0, 1.0, 5.0]
    if dtype != torch.float32 or device.type != "cpu":
        return
    for args, what in (((g.t(), g[:, 0], 1.0), "contiguous"), ((g, g[:, 0].double(), 1.0), "grad_loss of the"),
                       ((g, g[:3, 0], 1.0), "grad_loss of shape"), ((g, g[:, 0], 0.0), "non-zero grad_scale"),
                       ((g.long(), g[:, 0].long(), 1.0), "grad"), ((g, g[:, 0], 1.0), "memory apart")):
        with pytest.raises(RuntimeError, match=f"torchxc::_zlpr_scale_grad_: expected .*{what}"):
            op(*args)
    with pytest.raises(RuntimeError, match="torchxc::_zlpr_scale_grad_: grad_scale 1e-50 is not a finite, non-zero "
                       "float32"):  # the forward's own check: the kernels divide by it in float32
        op(g, g[:, 0].clone(), 1e-50)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("shape", [(6, 11), (3, 20000), (2, 40000)], ids=str)  # on CUDA: warp, block, split rows
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_grad_scale_argument(device, shape, dtype):
    s, t = make_case(shape, dtype, torch.device(device))
    loss1, g1 = torch.ops.torchxc.zlpr_loss.default(s, t, None, True)
    loss2, g2 = torch.ops.torchxc.zlpr_loss.default(s, t, None, True, 0.25)
    # one rounding of the scaled value against a rounded product
    tol = {torch.float32: 1e-7, torch.float64: 1e-15}.get(dtype, 1e-2)
    assert torch.equal(loss1, loss2) and max_err(g2, 0.25 * g1) <= tol * g1.abs().max().item()
    pos = dense_to_positives(t.cpu()).to(device)
    _, g3 = torch.ops.torchxc.zlpr_loss_sparse.default(s, pos, None, True, 0.25)
    assert max_err(g3, g2) <= tol * g1.abs().max().item()
    if torch.device(device).type != "cpu":  # the CUDA kernels fold grad_scale as the CPU does
        _, gc = torch.ops.torchxc.zlpr_loss.default(s.cpu(), t.cpu(), None, True, 0.25)
        # the devices sum in different orders: each within its own float32 error of float64 (up to ~1e-6 of the
        # largest entry on the CPU at 40000 classes), so 3e-6 between them
        assert max_err(g2.cpu(), gc) <= max(tol, 3e-6 if dtype != torch.float64 else 1e-13) * gc.abs().max().item()
    if shape != (6, 11) or dtype != torch.float32 or torch.device(device).type != "cpu":
        return
    with pytest.raises(RuntimeError, match="torchxc::zlpr_loss: expected a finite, non-zero grad_scale, but got inf"):
        torch.ops.torchxc.zlpr_loss.default(s, t, None, True, math.inf)
    with pytest.raises(RuntimeError, match="non-zero grad_scale, but got 0"):
        torch.ops.torchxc.zlpr_loss.default(s, t, None, True, 0.0)


def test_compiled_mean_with_dynamic_shapes():
    """torch.compile with dynamic shapes (here: a second batch size) traces the mean's grad_scale as 1."""
    torch._dynamo.reset()
    f = torch.compile(lambda x, t: torchxc.zlpr_loss(x, t, reduction="mean"), fullgraph=True)
    for n in (6, 9, 13):
        s, t = make_case((n, 7), torch.float32, torch.device("cpu"), seed=n)
        x = s.clone().requires_grad_(True)
        f(x, t).backward()
        xr = s.double().clone().requires_grad_(True)
        zlpr_reference(xr, t).mean().backward()
        assert max_err(x.grad, xr.grad) < 1e-6


def test_arguments_of_the_wrong_type_are_named():
    """A reduction passed in the mask slot or a list target failed with "'str' object has no attribute 'dtype'";
    uint64 positives wrapped (2^64 - 1 became the padding -1); the label-range error printed 1.0000001 as 1, the
    positives' shape as [[2, 3], P], and the meta kernel of the sparse op named zlpr_loss and "labels"."""
    x, t = torch.randn(3, 4), torch.zeros(3, 4)
    with pytest.raises(TypeError, match="torchxc.zlpr_loss: mask must be a tensor, got str"):
        torchxc.zlpr_loss(x, t, "sum")
    with pytest.raises(TypeError, match="torchxc.zlpr_loss: mask must be a tensor, got str"):
        torchxc.nn.ZLPRLoss()(x, t, "sum")
    with pytest.raises(TypeError, match="torchxc.zlpr_loss: target must be a tensor, got list"):
        torchxc.zlpr_loss(x, [[1, 0, 0, 0]] * 3)
    with pytest.raises(TypeError, match="torchxc.zlpr_loss_sparse: positives must be a tensor, got list"):
        torchxc.zlpr_loss_sparse(x, [[1], [2], [3]])
    with pytest.raises(TypeError, match="ZLPRLoss: sparse must be a bool, got str 'yes'"):
        torchxc.nn.ZLPRLoss(sparse="yes")
    with pytest.raises(ValueError, match="torchxc.zlpr_loss_sparse: positives of dtype uint64 are not supported"):
        torchxc.zlpr_loss_sparse(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2**64 - 1]], dtype=torch.uint64))
    near_one = torch.tensor([[1.0000001, 0, 0], [0, 0, 0]])
    with pytest.raises(RuntimeError, match=r"row 0 has 1 outside, the first 1\.0000001 \(class 0\)"):
        torchxc.zlpr_loss(torch.randn(2, 3), near_one)  # the kernel's message
    with pytest.raises(RuntimeError, match=r"the first 1\.0000001 \(class 0\)"):
        torchxc.zlpr_loss(torch.randn(2, 3, dtype=torch.float64), near_one)  # the wrapper's (cast) message
    with pytest.raises(RuntimeError, match=r"expected positives of shape \[2, 3, P\] \(the input's leading dims"):
        torchxc.zlpr_loss_sparse(torch.randn(2, 3, 5), torch.zeros(7, 1, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"expected positives of shape \[P\] \(the input's leading dims"):
        torchxc.zlpr_loss_sparse(torch.randn(5), torch.zeros(7, 1, dtype=torch.long))
    with pytest.raises(RuntimeError, match="torchxc::zlpr_loss_sparse: expected positives on cpu"):
        torchxc.zlpr_loss_sparse(x, torch.zeros(3, 1, dtype=torch.long, device="meta"))
