"""torchxc.fused_linear_zlpr_loss equals zlpr_loss on the materialised logits, in value and gradients."""
import math
import os
import subprocess
import sys
import tempfile

import pytest
import torch

import torchxc
from test_zlpr import dense_to_positives
from testing import devices, device_ids, max_err


def make(N, H, C, dtype, device, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(N, H, generator=gen, dtype=torch.float64)).to(dtype).to(device)
    weight = (torch.randn(C, H, generator=gen, dtype=torch.float64) / H ** 0.5).to(dtype).to(device)
    b = (torch.randn(C, generator=gen, dtype=torch.float64)).to(dtype).to(device) if bias else None
    labels = (torch.rand(N, C, generator=gen) < 0.1).to(device)
    return hidden, weight, b, labels


def unfused(hidden, weight, bias, labels, mask=None, reduction="mean", sparse=False):
    logits = hidden @ weight.t() + (bias if bias is not None else 0)
    fn = torchxc.zlpr_loss_sparse if sparse else torchxc.zlpr_loss
    return fn(logits, labels, mask, reduction)


def grads(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None and t.requires_grad])


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("labels_kind", ["hard", "soft", "sparse"])
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 1000])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_unfused(device, dtype, labels_kind, chunk_size, reduction):
    hidden, weight, bias, hard = make(13, 8, 37, dtype, device)
    labels = {"hard": hard, "soft": torch.rand(13, 37, dtype=dtype, device=device) * hard,
              "sparse": dense_to_positives(hard.cpu()).to(device)}[labels_kind]
    mask = torch.rand(37, generator=torch.Generator().manual_seed(1)).to(device) < 0.9
    sparse = labels_kind == "sparse"
    ts = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    tu = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    lf = torchxc.fused_linear_zlpr_loss(*ts, labels, mask, reduction, chunk_size=chunk_size)
    lu = unfused(*tu, labels, mask, reduction, sparse)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert max_err(lf, lu) <= tol * max(1.0, float(lu.detach().abs()))
    for a, b in zip(grads(lf, ts), grads(lu, tu)):
        assert max_err(a, b) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_leading_dims_no_bias_frozen_weight_bf16(device):
    hidden, weight, _, labels = make(12, 16, 40, torch.float32, device, bias=False)
    h3 = hidden.reshape(3, 4, 16).requires_grad_(True)
    l3 = labels.reshape(3, 4, 40)
    lf = torchxc.fused_linear_zlpr_loss(h3, weight, None, l3, chunk_size=5)  # weight does not require grad
    hu = h3.detach().clone().requires_grad_(True)
    lu = unfused(hu, weight, None, l3)
    assert max_err(lf, lu) < 1e-5
    (gf,) = torch.autograd.grad(lf, h3)
    (gu,) = torch.autograd.grad(lu, hu)
    assert max_err(gf, gu) < 1e-6
    # bfloat16: within 2x the error of the unfused computation in bfloat16 (both against float64)
    h64, w64, b64, lab = make(32, 64, 300, torch.float64, device)
    ref = [t.clone().requires_grad_(True) for t in (h64, w64, b64)]
    gref = grads(unfused(*ref, lab), ref)
    fb = [t.to(torch.bfloat16).requires_grad_(True) for t in (h64, w64, b64)]
    ub = [t.to(torch.bfloat16).requires_grad_(True) for t in (h64, w64, b64)]
    gf = grads(torchxc.fused_linear_zlpr_loss(*fb, lab, chunk_size=7), fb)
    gu = grads(unfused(*ub, lab), ub)
    for a, b, r in zip(gf, gu, gref):
        assert max_err(a, r) <= 2 * max_err(b, r) + 1e-3


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_float16_gradients_follow_loss_scaling(device):
    # A mean over N = 2048 rows puts small float16 gradients near the subnormal range; a loss scaler's factor
    # (torch.amp.GradScaler seeds the backward with it) lifts them out of it in PyTorch's own backward, and must
    # in the fused one too: it may not apply 1/N to float16 gradients before the factor arrives.
    h64, w64, b64, lab = make(2048, 32, 400, torch.float64, device)
    for seed in (1.0, 1024.0):
        ref = [t.clone().requires_grad_(True) for t in (h64, w64, b64)]
        gref = torch.autograd.grad(unfused(*ref, lab), ref, torch.tensor(seed, dtype=torch.float64, device=device))
        fh = [t.half().requires_grad_(True) for t in (h64, w64, b64)]
        uh = [t.half().requires_grad_(True) for t in (h64, w64, b64)]
        seed16 = torch.tensor(seed, dtype=torch.float16, device=device)
        gf = torch.autograd.grad(torchxc.fused_linear_zlpr_loss(*fh, lab, chunk_size=300), fh, seed16)
        gu = torch.autograd.grad(unfused(*uh, lab), uh, seed16)
        for a, b, r in zip(gf, gu, gref):
            assert a.dtype == torch.float16
            off_f = ((a.double() - r).abs() > 0.01 * r.abs()).double().mean().item()
            off_u = ((b.double() - r).abs() > 0.01 * r.abs()).double().mean().item()
            assert off_f <= off_u + 0.005, (seed, off_f, off_u)  # share of entries off by more than 1%
    h16, w16, b16, lab16 = make(6, 5, 9, torch.float16, device)
    for flags in ([True, True, True], [False, True, True]):
        torch.library.opcheck(torch.ops.torchxc.fused_linear_zlpr.default,
                              (h16, w16, b16, lab16, None, False, 4, True, flags))


def test_autocast_float32_parameters():
    # the usual mixed-precision setup: float32 parameters, bfloat16 autocast; as zlpr_loss(linear(h)) runs
    hidden, weight, bias, labels = make(16, 8, 12, torch.float32, "cpu")
    soft = torch.rand(16, 12, generator=torch.Generator().manual_seed(2)) * labels
    positives = dense_to_positives(labels)
    for lab, sparse in ((labels, False), (soft, False), (positives, True)):
        ts = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        tu = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lf = torchxc.fused_linear_zlpr_loss(*ts, lab)
            logits = torch.nn.functional.linear(*tu)  # bfloat16 (hidden @ weight.T + bias would add in float32)
            lu = (torchxc.zlpr_loss_sparse if sparse else torchxc.zlpr_loss)(logits, lab)
        assert lf.dtype == lu.dtype == torch.bfloat16
        assert max_err(lf, lu) <= 2e-2 * float(lu.abs())
        for a, b in zip(grads(lf, ts), grads(lu, tu)):
            assert a.dtype == torch.float32
            assert max_err(a, b) <= 2e-2 * float(b.abs().max())


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_gradcheck_opcheck_compile(device):
    hidden, weight, bias, labels = make(6, 5, 9, torch.float64, device)
    args = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    assert torch.autograd.gradcheck(lambda h, w, b: torchxc.fused_linear_zlpr_loss(h, w, b, labels, chunk_size=4),
                                    args)
    h32, w32, b32, lab = make(6, 5, 9, torch.float32, device)
    for flags in ([True, True, True], [False, True, False], [False, False, False]):
        torch.library.opcheck(torch.ops.torchxc.fused_linear_zlpr.default,
                              (h32, w32, b32, lab, None, False, 4, True, flags))
    torch._dynamo.reset()
    f = torch.compile(lambda h, w, b: torchxc.fused_linear_zlpr_loss(h, w, b, lab, chunk_size=2), fullgraph=True)
    ts = [t.clone().requires_grad_(True) for t in (h32, w32, b32)]
    tu = [t.clone().requires_grad_(True) for t in (h32, w32, b32)]
    for a, b in zip(grads(f(*ts), ts), grads(unfused(*tu, lab), tu)):
        assert max_err(a, b) < 1e-5


def test_bad_input_errors():
    hidden, weight, bias, labels = make(4, 3, 5, torch.float32, "cpu")
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        torchxc.fused_linear_zlpr_loss(hidden, weight, bias, labels, reduction="none")
    with pytest.raises(ValueError, match=r"expected hidden \[..., H\] and weight \[C, H\]"):
        torchxc.fused_linear_zlpr_loss(hidden, weight.t(), bias, labels)
    with pytest.raises(ValueError, match="labels must be"):
        torchxc.fused_linear_zlpr_loss(hidden, weight, bias, labels[:3])
    with pytest.raises(ValueError, match="weight must have hidden's dtype"):
        torchxc.fused_linear_zlpr_loss(hidden, weight.double(), bias, labels)
    # sparse=True wants class indices, as zlpr_loss_sparse does: a multi-hot target was read as indices 0 / 1
    for dense in (labels.bool(), labels.float()):
        with pytest.raises(ValueError, match="with sparse=True the labels must be integer class indices"):
            torchxc.fused_linear_zlpr_loss(hidden, weight, bias, dense, sparse=True)
    # an index out of range: this op's name and the batch's row (the error named the inner zlpr_loss_sparse op)
    positives = torch.tensor([[0, -1], [1, 2], [3, -1], [2, 5]])
    with pytest.raises(RuntimeError, match=r"^torchxc::fused_linear_zlpr: positive class index 5 of row 3 is out of "
                                           r"range for 5 classes"):
        torchxc.fused_linear_zlpr_loss(hidden, weight, bias, positives, chunk_size=2)
    # indices padded to P = C are read as a dense target by default; the error now says so and how to fix it
    # (it said "labels must lie in [0, 1]")
    positives = torch.tensor([[0, 4, -1, -1, -1], [1, -1, -1, -1, -1], [4, 3, 2, 1, 0], [2, -1, -1, -1, -1]])
    with pytest.raises(RuntimeError, match=r"labels must lie in \[0, 1\], but row 0 has 4 outside, the first 4 "
                                           r"\(class 1\)\. An integer target whose last dim is C = 5 is read as "
                                           r"dense \{0, 1\} labels \(these hold values from -1 to 4\); for positive "
                                           r"class indices \(padded with -1\) pass sparse=True"):
        torchxc.fused_linear_zlpr_loss(hidden, weight, bias, positives)
    expect = torchxc.zlpr_loss_sparse(hidden @ weight.T + bias, positives)
    torch.testing.assert_close(torchxc.fused_linear_zlpr_loss(hidden, weight, bias, positives, sparse=True), expect)
    for sparse in (True, None):  # complex labels are named as such, whatever their last dim
        with pytest.raises(ValueError, match="labels must be bool, integer or real, got torch.complex64"):
            torchxc.fused_linear_zlpr_loss(hidden, weight, bias, labels[:, :3].to(torch.complex64), sparse=sparse)
    # unsigned dense labels (no aminmax CPU kernel for uint16/32/64) still work without sparse=
    expect = torchxc.fused_linear_zlpr_loss(hidden, weight, bias, labels.bool())
    for dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
        torch.testing.assert_close(torchxc.fused_linear_zlpr_loss(hidden, weight, bias, labels.to(dtype)), expect)
    with pytest.raises(ValueError, match="labels must be bool, integer or real, got torch.complex64"):
        torchxc.fused_linear_zlpr_loss(hidden, weight, bias, labels.to(torch.complex64))


def test_row_mask_when_rows_equal_classes_and_bad_chunks():
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(5, 3, dtype=torch.float64, generator=g), torch.randn(5, 3, dtype=torch.float64, generator=g)
    t = torch.rand(5, 5, generator=g) < 0.5
    rows = torch.tensor([[True], [False], [True], [False], [True]])  # [N, 1] with N == C: a per-row mask
    assert torchxc.fused_linear_zlpr_loss(h, w, None, t, mask=rows).item() == pytest.approx(
        torchxc.zlpr_loss(h @ w.T, t, mask=rows).item(), rel=1e-12)
    with pytest.raises(ValueError, match="does not broadcast"):
        torchxc.fused_linear_zlpr_loss(h, w, None, t, mask=torch.ones(2, 5, dtype=torch.bool))
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            torchxc.fused_linear_zlpr_loss(h, w, None, t, chunk_size=bad)
    assert math.isnan(torchxc.fused_linear_zlpr_loss(h[:0], w, None, t[:0]).item())  # as zlpr_loss's mean


def test_raw_op_checks_its_arguments():
    hidden, weight, bias, labels = make(6, 5, 9, torch.float32, "cpu")
    op = torch.ops.torchxc.fused_linear_zlpr.default
    flags = [True, True, True]
    for args, msg in (((hidden, weight, bias, labels, None, False, -1, True, flags), "chunk_size >= 1"),
                      ((hidden, weight, bias, labels, None, False, -5, True, flags), "chunk_size >= 1"),
                      ((hidden, weight, bias, torch.cat([labels, labels]), None, False, 4, True, flags),
                       r"labels \[6, 9\]"),
                      ((hidden, weight, bias, labels, torch.ones(12, 9, dtype=torch.bool), False, 4, True, flags),
                       r"mask \[9\] or \[6, 9\]"),
                      ((hidden[0], weight, bias, labels, None, False, 4, True, flags), "expected hidden \\[N, H\\]"),
                      ((hidden, weight, bias, labels, None, False, 4, True, [True, True]), "grads")):
        with pytest.raises(ValueError, match="torchxc::fused_linear_zlpr: (expected )?" + msg):
            op(*args)


def test_no_double_backward_and_no_gradients_under_no_grad():
    h = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.rand(4, 5) < 0.4
    g, = torch.autograd.grad(torchxc.fused_linear_zlpr_loss(h, w, None, t), h, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        ((g ** 2).sum() + w.sum()).backward()
    with torch.no_grad():
        loss = torchxc.fused_linear_zlpr_loss(h, w, None, t)
    assert not loss.requires_grad
    assert loss.item() == pytest.approx(torchxc.zlpr_loss(h @ w.T, t).item(), rel=1e-12)


def test_backward_hands_on_stored_gradients_safely():
    """loss.backward() (seed 1, graph freed) gets the stored gradients themselves (no second [C, H] weight gradient
    at the peak); another seed scales them; a backward that keeps the graph returns copies, so that modifying one
    or accumulating .grad over several backwards never changes what the next backward returns."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(40, 24, generator=g, requires_grad=True)
    W = torch.randn(300, 24, generator=g, requires_grad=True)
    b = torch.zeros(300, requires_grad=True)
    t = torch.rand(40, 300, generator=g) < 0.03
    ref = torch.autograd.grad(torchxc.zlpr_loss(torch.addmm(b, h, W.t()), t), [h, W, b])
    torchxc.fused_linear_zlpr_loss(h, W, b, t).backward()
    assert all(max_err(x.grad, r) < 1e-5 for x, r in zip((h, W, b), ref))
    scaled = torch.autograd.grad(torchxc.fused_linear_zlpr_loss(h, W, b, t) * -2.5, [h, W, b])
    assert all(max_err(s, -2.5 * r) < 1e-5 for s, r in zip(scaled, ref))
    loss = torchxc.fused_linear_zlpr_loss(h, W, b, t)
    first = torch.autograd.grad(loss, [h, W, b], retain_graph=True)
    first[1].mul_(2)  # gradients of a kept graph are their own tensors
    second = torch.autograd.grad(loss, [h, W, b])
    assert torch.equal(first[1], 2 * second[1]) and torch.equal(first[0], second[0])
    for x in (h, W, b):  # .grad accumulated over backwards of a kept graph
        x.grad = None
    loss = torchxc.fused_linear_zlpr_loss(h, W, b, t)
    loss.backward(retain_graph=True)
    loss.backward()
    assert all(max_err(x.grad, 2 * r) < 1e-5 for x, r in zip((h, W, b), ref))


def test_compiled_backward_scales_by_any_seed():
    """Under torch.compile the backward is traced without the seed's value, so it must not branch on it (it always
    scales). Run as a script with its own compile cache: a compiled module-level function, seeds 1 and 3, against
    eager zlpr_loss."""
    code = (
        "import torch, torchxc\n"
        "torch.manual_seed(0)\n"
        "h, w, b = torch.randn(6, 5), torch.randn(9, 5), torch.randn(9)\n"
        "lab = torch.rand(6, 9) < 0.3\n"
        "f = torch.compile(lambda h, w, b: torchxc.fused_linear_zlpr_loss(h, w, b, lab, chunk_size=2), fullgraph=True)\n"
        "for seed in (1.0, 3.0):\n"
        "    ts = [t.clone().requires_grad_(True) for t in (h, w, b)]\n"
        "    tu = [t.clone().requires_grad_(True) for t in (h, w, b)]\n"
        "    a = torch.autograd.grad(f(*ts) * seed, ts)\n"
        "    r = torch.autograd.grad(torchxc.zlpr_loss(torch.addmm(tu[2], tu[0], tu[1].t()), lab) * seed, tu)\n"
        "    assert max((x - y).abs().max().item() for x, y in zip(a, r)) < 1e-5, seed\n"
        "print('ok')\n")
    with tempfile.TemporaryDirectory() as cache:  # a fresh compile cache: no backward traced by another build
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_soft_target_requiring_grad_is_refused():
    """As zlpr_loss: no gradient flows to the target, so a target that requires grad (a teacher's output) is an
    error rather than a silently missing gradient."""
    hidden, weight, bias, labels = make(4, 3, 5, torch.float64, "cpu")
    teacher = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="no gradient with respect to the target"):
        torchxc.fused_linear_zlpr_loss(hidden, weight, bias, torch.sigmoid(teacher))
    with torch.no_grad():
        torchxc.fused_linear_zlpr_loss(hidden, weight, bias, torch.sigmoid(teacher))


def test_dynamic_batch_is_one_graph():
    """The mean's 1 / N is taken inside the op: torch.compile(dynamic=True) makes one graph for every batch size
    (a Python-float scale argument made a guard on N and a recompile per size)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    f = torch.compile(torchxc.fused_linear_zlpr_loss, backend=counter, dynamic=True)
    w = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    for n in (3, 5, 7, 9):
        h = torch.randn(n, 5, dtype=torch.float64, requires_grad=True)
        t = torch.rand(n, 6, generator=torch.Generator().manual_seed(n)) < 0.4
        loss = f(h, w, None, t)
        assert max_err(loss, torchxc.zlpr_loss(h @ w.T, t)) < 1e-12
        loss.backward()
    assert counter.frame_count == 1


def test_exported_without_gradients_refuses_backward():
    """A graph exported under torch.no_grad() holds an op that computed no gradients; training through it raises
    instead of leaving the parameters' .grad at None."""
    lin = torch.nn.Linear(5, 6)

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, h, t):
            return torchxc.fused_linear_zlpr_loss(h, self.lin.weight, self.lin.bias, t)

    h, t = torch.randn(4, 5), torch.rand(4, 6) < 0.4
    with torch.no_grad():
        ep = torch.export.export(Head(), (h, t))
    loss = ep.module()(h, t)
    assert loss.item() == pytest.approx(torchxc.zlpr_loss(lin(h), t).item(), rel=1e-6)
    assert loss.requires_grad  # the exported module's parameters require grad
    with pytest.raises(RuntimeError, match="backward needs the gradient of weight"):
        loss.backward()


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_export_with_a_dynamic_batch(chunk_size):
    """Nothing in the wrapper depends on N's value (the default chunk size and the mean's 1 / N are worked out in
    the op): torch.export takes a dynamic batch and the program is right for other sizes."""
    lin = torch.nn.Linear(8, 6).double()

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, h, t):
            return torchxc.fused_linear_zlpr_loss(h, self.lin.weight, self.lin.bias, t, chunk_size=chunk_size)

    b = torch.export.Dim("b")
    h, t = torch.randn(5, 8, dtype=torch.float64), torch.rand(5, 6) < 0.4
    ep = torch.export.export(Head(), (h, t), dynamic_shapes=({0: b}, {0: b}))
    for n in (2, 5, 17):
        h, t = torch.randn(n, 8, dtype=torch.float64), torch.rand(n, 6) < 0.4
        assert max_err(ep.module()(h, t), torchxc.zlpr_loss(lin(h), t)) < 1e-12


def test_float16_mean_over_no_rows_gives_zero_gradients():
    """As zlpr_loss on the logits: the loss over no rows is NaN, the weight and bias gradients are zeros (the
    float16 path applies the mean's 1 / N in the backward; over no rows that factor is 0, not NaN)."""
    h = torch.randn(0, 5).half().requires_grad_(True)
    w = torch.randn(3, 5).half().requires_grad_(True)
    b = torch.randn(3).half().requires_grad_(True)
    loss = torchxc.fused_linear_zlpr_loss(h, w, b, torch.zeros(0, 3, dtype=torch.bool))
    assert loss.isnan()
    loss.backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    assert h.grad.shape == (0, 5)


def test_vmap_then_backward():
    """Under torch.vmap the batched hidden reports requires_grad=False while autograd records the op on the tensor it
    wraps: the op must still compute hidden's gradient (it raised "ran without computing it"), and only it when
    hidden is a plain batched input. Nested vmap too."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    h = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.rand(2, 3, 4, 6, generator=g) < 0.3

    def fn(hh, tt):
        return torchxc.fused_linear_zlpr_loss(hh, w, b, tt)

    def unfused(hh, tt):
        return torchxc.zlpr_loss(hh @ w.T + b, tt)

    want = torch.autograd.grad(sum(unfused(h[i, j], t[i, j]) for i in range(2) for j in range(3)), (h, w, b))
    for batched in (torch.vmap(torch.vmap(fn)), lambda hh, tt: torch.stack([torch.vmap(fn)(hh[i], tt[i])
                                                                           for i in range(2)])):
        got = torch.autograd.grad(batched(h, t).sum(), (h, w, b))
        for a, e in zip(got, want):
            assert max_err(a, e) < 1e-12
    # the wrappers see through vmap's wrappers (one per level) to whether the tensor inside requires grad
    from torchxc.zlpr import _wants_grad

    seen = []

    def probe(a, b):
        seen.append((_wants_grad(a), _wants_grad(b)))
        return a.sum() + b.sum()

    torch.vmap(probe)(h[0], h[0].detach())
    torch.vmap(torch.vmap(probe))(h, h.detach())
    with torch.no_grad():
        torch.vmap(probe)(h[0], h[0].detach())
    assert seen == [(True, False), (True, False), (False, False)]
    # hidden a plain (batched) input: only the weight and bias gradients
    got = torch.autograd.grad(torch.vmap(fn)(h[0].detach(), t[0]).sum(), (w, b))
    want = torch.autograd.grad(sum(unfused(h[0, j].detach(), t[0, j]) for j in range(3)), (w, b))
    for a, e in zip(got, want):
        assert max_err(a, e) < 1e-12


def test_arguments_of_the_wrong_type_are_named():
    """A reduction passed in the mask slot failed with an AttributeError, integer hidden states with an error
    naming the inner zlpr_loss_sparse, a NumPy chunk size was refused and uint64 positives wrapped."""
    h, w, t = torch.randn(3, 5), torch.randn(4, 5), torch.zeros(3, 4)
    with pytest.raises(TypeError, match="torchxc.fused_linear_zlpr_loss: mask must be a tensor, got str"):
        torchxc.fused_linear_zlpr_loss(h, w, None, t, "sum")
    with pytest.raises(TypeError, match="torchxc.fused_linear_zlpr_loss: target_or_positives must be a tensor"):
        torchxc.fused_linear_zlpr_loss(h, w, None, [[0], [1], [2]])
    with pytest.raises(ValueError, match="torchxc.fused_linear_zlpr_loss: hidden must be float16, bfloat16, float32 "
                                         "or float64, got torch.int64"):
        torchxc.fused_linear_zlpr_loss(h.long(), w.long(), None, torch.tensor([[0], [1], [2]]))
    with pytest.raises(ValueError, match="torchxc.fused_linear_zlpr_loss: positives of dtype uint64"):
        torchxc.fused_linear_zlpr_loss(h, w, None, torch.tensor([[0], [1], [2**64 - 1]], dtype=torch.uint64))
    np = pytest.importorskip("numpy")
    assert torchxc.fused_linear_zlpr_loss(h, w, None, t, chunk_size=np.int64(2)).item() == pytest.approx(
        torchxc.fused_linear_zlpr_loss(h, w, None, t, chunk_size=2).item(), rel=0, abs=0)
    for bad in (True, 2.0, 0):
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            torchxc.fused_linear_zlpr_loss(h, w, None, t, chunk_size=bad)


def test_op_called_directly_checks_devices_and_dtypes():
    """torch.ops.torchxc.fused_linear_zlpr called directly: one meta argument sent the call to the fake kernel,
    which returned uninitialised CPU memory as the loss and gradients; weights of another dtype, integer dense labels
    or masks and int32 positives failed with messages naming other ops (mat1 and mat2, torchxc::zlpr_loss)."""
    op = torch.ops.torchxc.fused_linear_zlpr
    h, W, b = torch.randn(6, 4), torch.randn(5, 4), torch.randn(5)
    lab = torch.rand(6, 5) > 0.5
    flags = [True, True, True]
    for name, args in (("labels", (h, W, b, lab.to("meta"), None)), ("weight", (h, W.to("meta"), b, lab, None)),
                       ("bias", (h, W, b.to("meta"), lab, None)), ("mask", (h, W, b, lab, lab.to("meta")))):
        with pytest.raises(RuntimeError, match=f"torchxc::fused_linear_zlpr: expected {name} on cpu"):
            op(*args, False, 0, True, flags)
    for match, args, sparse in (("weight of hidden's dtype", (h, W.double(), b, lab, None), False),
                                ("bias of hidden's dtype", (h, W, b.double(), lab, None), False),
                                ("dense labels of dtype bool or hidden's", (h, W, b, lab.long(), None), False),
                                ("mask of dtype bool", (h, W, b, lab, torch.ones(5, dtype=torch.int32)), False),
                                ("positives .sparse=True. of dtype int64",
                                 (h, W, b, torch.zeros(6, 2, dtype=torch.int32), None), True)):
        with pytest.raises(ValueError, match=f"torchxc::fused_linear_zlpr: expected {match}"):
            op(*args, sparse, 0, True, flags)
    loss = op(h, W, b, lab, None, False, 0, True, flags)[0]
    assert torch.allclose(loss, torchxc.zlpr_loss(h @ W.T + b, lab))
