"""torchxc.sparsemax_loss against the paper's formula in float64.

Reference (Martins & Astudillo 2016, eq. 17, and its multi-label form with q = y / ||y||_1):
    L(z; q) = -q.z + 1/2 sum_{j in S(z)} (z_j^2 - tau^2) + 1/2 ||q||^2,     dL/dz = sparsemax(z) - q.
The loss is shift invariant (sum q = 1), so the reference evaluates it on z - max(z), where the formula has no
catastrophic cancellation even for |z| ~ 1e30. Terms with q_j = 0 are left out of -q.z, so masked (-inf) classes
without target mass contribute nothing, and a masked class with target mass gives +inf.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchxc
from test_sparsemax import make_input, sparsemax_reference
from testing import check_against_reference, devices, device_ids, dtypes, max_err, requires_cuda


def sparsemax_loss_reference(z: torch.Tensor, q: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """Per-row loss; z [..., C] with classes last, q [..., C] a distribution (rows of zeros give 0)."""
    z = z.to(dtype)
    q = q.to(dtype)
    z = z - z.amax(-1, keepdim=True)
    p = sparsemax_reference(z, -1, dtype=dtype)
    support = p > 0
    tau = ((z * support).nan_to_num(0).sum(-1) - 1) / support.sum(-1)
    zz = torch.where(support, z * z - tau[..., None] ** 2, torch.zeros_like(z))
    qz = torch.where(q > 0, q * z, torch.zeros_like(z))
    loss = -qz.sum(-1) + 0.5 * zz.sum(-1) + 0.5 * (q * q).sum(-1)
    return torch.where(q.sum(-1) > 0, loss, torch.zeros_like(loss))


def one_hot_target(labels, num_classes, ignore_index=-100):
    valid = labels != ignore_index
    q = torch.nn.functional.one_hot(labels.clamp(min=0), num_classes).double()
    return q * valid[..., None]


def normalise(t):
    t = t.double()
    s = t.sum(-1, keepdim=True)
    return torch.where(s > 0, t / s.clamp(min=1e-300), torch.zeros_like(t))


def make_case(kind, shape, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = make_input(shape, dtype, device, scale=2.0, seed=seed)
    C = shape[-1]
    if kind == "index":
        target = torch.randint(C, shape[:-1], generator=gen)
        if target.numel() > 1:
            target.view(-1)[0] = -100  # one ignored row
        q = one_hot_target(target, C)
    elif kind == "multi_hot":
        target = torch.rand(shape, generator=gen) < 0.3
        if target.numel() > C:  # (not the only row, which would leave nothing to test)
            target.view(-1, C)[-1] = False  # one row without labels: ignored
        q = normalise(target)
    else:  # proportions with exact zeros
        target = torch.rand(shape, generator=gen, dtype=torch.float64) * (torch.rand(shape, generator=gen) < 0.5)
        if target.numel() > C:
            target.view(-1, C)[-1] = 0.0  # one row without labels: ignored
        q = normalise(target)
        target = target.to(dtype)
    return z, target.to(device), q.to(device)


KINDS = ["index", "multi_hot", "proportions"]
SHAPES = [(1, 1), (7, 1), (6, 2), (9, 31), (4, 1025), (3, 5, 17), (2, 40000), (1, 2 ** 20 + 3)]


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_loss_and_gradient_match_reference(device, dtype, kind, shape):
    z, target, q = make_case(kind, shape, dtype, device)
    ref = sparsemax_loss_reference(z, q)
    z = z.requires_grad_(True)
    loss = torchxc.sparsemax_loss(z, target, reduction="none")
    assert loss.shape == shape[:-1] and loss.dtype == dtype
    plain = sparsemax_loss_reference(z.detach(), q, dtype=dtype)
    check_against_reference(loss, ref, plain, dtype)
    assert (loss >= 0).all()
    # gradient of the per-row losses weighted by w: w * (sparsemax(z) - q)
    w = make_input(shape[:-1], torch.float64, device, seed=3)
    (grad,) = torch.autograd.grad(loss, z, w.to(dtype))
    valid = (q.sum(-1, keepdim=True) > 0).double()
    grad_ref = w[..., None] * (sparsemax_reference(z.detach()) - q) * valid
    plain_grad = (w[..., None] * (sparsemax_reference(z.detach(), dtype=dtype) - q.to(dtype)) * valid).to(dtype)
    # p - q: terms up to 1 (times |w|), which cancel where the kernel's q = w / mass rounds
    check_against_reference(grad, grad_ref, plain_grad, dtype, scale=float(w.abs().max()) if w.numel() else 0.0)
    if dtype in (torch.float32, torch.float64):
        # off the support the gradient is -w q, one product per entry: each to a relative error (the absolute
        # tolerance above, set by the largest entry, would let a long row's small entries be anything)
        off = (sparsemax_reference(z.detach()) == 0) & (torchxc.sparsemax(z.detach()) == 0) & (grad_ref != 0)
        if off.any():
            rel = ((grad.double() - grad_ref).abs()[off] / grad_ref.abs()[off]).max().item()
            assert rel <= (1e-5 if dtype == torch.float32 else 1e-13), rel


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("kind", KINDS)
def test_reductions(device, kind):
    z, target, q = make_case(kind, (10, 13), torch.float64, device)
    none = torchxc.sparsemax_loss(z, target, reduction="none")
    valid = q.sum(-1) > 0
    assert valid.sum() < 10  # the case has an ignored row
    assert torch.allclose(torchxc.sparsemax_loss(z, target, reduction="sum"), none.sum())
    mean = torchxc.sparsemax_loss(z, target)
    assert torch.allclose(mean, none.sum() / valid.sum())
    assert (none[~valid] == 0).all()
    zr = z.clone().requires_grad_(True)
    torchxc.sparsemax_loss(zr, target).backward()
    grad_ref = (sparsemax_reference(z) - q) * valid[:, None] / valid.sum()
    assert max_err(zr.grad, grad_ref) < 1e-12


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_all_rows_ignored_gives_nan_mean(device):
    z = torch.randn(3, 4, device=device)
    assert torchxc.sparsemax_loss(z, torch.full((3,), -100, device=device)).isnan()
    assert torchxc.sparsemax_loss(z, torch.zeros(3, 4, device=device), reduction="sum") == 0
    assert torchxc.sparsemax_loss(z, torch.full((3,), 7, device=device), ignore_index=7).isnan()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_class_dim_and_noncontiguous(device, dim):
    z = make_input((4, 6, 5), torch.float32, device).transpose(0, 2)  # [5, 6, 4], non-contiguous
    zm = z.movedim(dim, -1)
    labels = torch.randint(zm.shape[-1], zm.shape[:-1], generator=torch.Generator().manual_seed(0)).to(device)
    out = torchxc.sparsemax_loss(z, labels, dim=dim, reduction="none")
    ref = sparsemax_loss_reference(zm, one_hot_target(labels, zm.shape[-1]))
    assert max_err(out, ref) < 1e-5
    weights = torch.rand(z.shape, generator=torch.Generator().manual_seed(1)).to(device).transpose(0, 1)
    weights = weights.transpose(0, 1)  # still non-contiguous, same shape as z
    out = torchxc.sparsemax_loss(z, weights, dim=dim, reduction="none")
    ref = sparsemax_loss_reference(zm, normalise(weights.movedim(dim, -1)))
    assert max_err(out, ref) < 1e-5


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
@pytest.mark.parametrize("dtype", dtypes, ids=str)
def test_masks_and_extreme_magnitudes(device, dtype):
    inf = math.inf
    big = {torch.float16: 3e4, torch.bfloat16: 1e37, torch.float32: 1e30, torch.float64: 1e300}[dtype]
    z = torch.tensor([[0.0, -inf, 1.0, 0.5],  # masked class, not the target
                      [0.0, -inf, 1.0, 0.5],  # target on a masked class: +inf
                      [big, -big, 0.0, big / 2],  # huge scores, correct class: loss 0
                      [big, -big, 0.0, big / 2],  # huge scores, wrong class: loss ~ big
                      [-inf, -inf, -inf, -inf]],  # all masked: NaN (unless ignored)
                     dtype=torch.float64).to(dtype).to(device)
    labels = torch.tensor([2, 1, 0, 1, 3], device=device)
    loss = torchxc.sparsemax_loss(z, labels, reduction="none").double().cpu()
    ref = sparsemax_loss_reference(z, one_hot_target(labels, 4)).cpu()
    assert loss[1] == inf and ref[1] == inf
    assert loss[2] == 0
    assert loss[4].isnan()
    rel = (loss[3] - ref[3]).abs() / ref[3]
    assert rel < {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    assert abs(float(loss[0] - ref[0])) < {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    # gradient stays finite where the loss is finite, and is sparsemax - q
    zr = z[:4].clone().requires_grad_(True)
    torchxc.sparsemax_loss(zr, labels[:4], reduction="sum").backward()
    assert torch.isfinite(zr.grad).all()
    assert (zr.grad[0, 1] == 0) and (zr.grad[1, 1] == -1)
    # a row whose loss is NaN gets NaN gradients; a skipped row gets zeros even when its scores are NaN
    zn = torch.tensor([[math.nan, 0.0, 1.0], [-inf, -inf, -inf], [math.nan, 1.0, 2.0]],
                      dtype=dtype, device=device, requires_grad=True)
    torchxc.sparsemax_loss(zn, torch.tensor([1, 0, -100], device=device), reduction="sum").backward()
    assert zn.grad[:2].isnan().all() and (zn.grad[2] == 0).all()


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_gradcheck(device):
    for kind in KINDS:
        z, target, _ = make_case(kind, (5, 7), torch.float64, device, seed=4)
        z.requires_grad_(True)
        for reduction in ("none", "mean"):
            assert torch.autograd.gradcheck(lambda t: torchxc.sparsemax_loss(t, target, reduction=reduction), (z,))


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_opcheck(device):
    for kind in KINDS:
        for shape in [(5, 7), (2, 3, 1100)]:
            z, target, _ = make_case(kind, shape, torch.float32, device)
            if kind == "multi_hot":
                target = target.float()
            for requires_grad in (False, True):
                zr = z.clone().requires_grad_(requires_grad)
                torch.library.opcheck(torch.ops.torchxc.sparsemax_loss.default, (zr, target, -100))
                loss, stats = torch.ops.torchxc.sparsemax_loss(z, target, -100)
                gl = torch.randn_like(loss)
                torch.library.opcheck(torch.ops.torchxc.sparsemax_loss_backward.default, (gl, z, target, stats))


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    loss_fn = torchxc.nn.SparsemaxLoss()

    def f(z, y):
        return loss_fn(z * 3.0, y)

    compiled = torch.compile(f, fullgraph=True)
    z = make_input((16, 40), torch.float32, device).requires_grad_(True)
    for y in (torch.randint(40, (16,)).to(device), (torch.rand(16, 40) < 0.2).to(device)):
        val, val_c = f(z, y), compiled(z, y)
        (g,) = torch.autograd.grad(val, z)
        (g_c,) = torch.autograd.grad(val_c, z)
        assert max_err(val, val_c) < 1e-5 and max_err(g, g_c) < 1e-6


def test_nn_module_repr_and_defaults():
    m = torchxc.nn.SparsemaxLoss(dim=0, reduction="sum", ignore_index=-1)
    z = torch.randn(5, 3)
    y = torch.tensor([0, 4, -1])
    assert torch.equal(m(z, y), torchxc.sparsemax_loss(z, y, dim=0, reduction="sum", ignore_index=-1))
    assert "reduction='sum'" in repr(m)


@pytest.mark.parametrize("device", devices, ids=device_ids(devices))
def test_bad_input_errors(device):
    z = torch.randn(4, 5, device=device)
    with pytest.raises(ValueError, match="reduction must be one of"):
        torchxc.sparsemax_loss(z, torch.zeros(4, dtype=torch.long, device=device), reduction="avg")
    with pytest.raises(ValueError, match=r"target must be class indices of shape \(4,\).*got a torch.int64 "
                                         r"tensor of shape \(5,\)"):
        torchxc.sparsemax_loss(z, torch.zeros(5, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match=r"target must be class indices .* got a torch.bool tensor of shape \(4,\)"):
        torchxc.sparsemax_loss(z, torch.tensor([True, False, True, True], device=device))  # was classes 1, 0, 1, 1
    with pytest.raises(ValueError, match="0-d tensor"):
        torchxc.sparsemax_loss(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(RuntimeError, match=r"torchxc::sparsemax_loss: expected target of dtype int64 \(class "
                                           r"indices\) or Float"):
        torch.ops.torchxc.sparsemax_loss(z, torch.zeros(4, 5, dtype=torch.float64, device=device), -100)
    with pytest.raises(RuntimeError, match="expected at least one class"):
        torchxc.sparsemax_loss(torch.randn(3, 0, device=device), torch.zeros(3, dtype=torch.long, device=device))
    with pytest.raises(RuntimeError, match="expected input of dtype"):
        torchxc.sparsemax_loss(z.long(), torch.zeros(4, dtype=torch.long, device=device))


def test_bad_target_values_cpu():
    z = torch.randn(4, 5)
    with pytest.raises(RuntimeError, match=r"target class index 5 is out of range for 5 classes"):
        torchxc.sparsemax_loss(z, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(RuntimeError, match=r"target class index -3 is out of range"):
        torchxc.sparsemax_loss(z, torch.tensor([0, 1, -3, 2]))
    bad = torch.rand(4, 5)
    bad[2, 3] = -0.5
    with pytest.raises(RuntimeError, match="finite and non-negative, but row 2"):
        torchxc.sparsemax_loss(z, bad)
    bad[2, 3] = math.nan
    with pytest.raises(RuntimeError, match="finite and non-negative"):
        torchxc.sparsemax_loss(z, bad)


@requires_cuda
def test_cuda_device_mismatch():
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.torchxc.sparsemax_loss(torch.randn(4, 5, device="cuda"), torch.zeros(4, dtype=torch.long), -100)


def test_weight_targets_outside_the_input_dtype_range():
    """Weights are normalised before they are cast to a narrower input dtype (the loss only sees proportions);
    weights whose sum cannot be normalised in the input's own dtype are an error, not a wrong loss."""
    z = torch.randn(2, 3)
    w = torch.tensor([[1e-9, 1e-9, 0.0], [1e6, 2e6, 3e6]], dtype=torch.float64)
    want = torchxc.sparsemax_loss(z, normalise(w).float(), reduction="none")
    got = torchxc.sparsemax_loss(z.half(), w, reduction="none")
    assert torch.allclose(got.float(), want, atol=2e-3)
    with pytest.raises(RuntimeError, match="cannot be normalised in Float"):
        torchxc.sparsemax_loss(z, torch.full((2, 3), 3e38))
    with pytest.raises(ValueError, match="no gradient with respect to the target; pass target.detach"):
        torchxc.sparsemax_loss(z, torch.rand(2, 3, requires_grad=True))
    with torch.no_grad():
        torchxc.sparsemax_loss(z, torch.rand(2, 3, requires_grad=True))  # nothing to differentiate: allowed
    with pytest.raises(ValueError, match="label weights must be real"):
        torchxc.sparsemax_loss(z, torch.ones(2, 3, dtype=torch.complex64))
    with pytest.raises(RuntimeError, match="torchxc::sparsemax_loss: expected target on cpu"):
        torchxc.sparsemax_loss(z, torch.rand(2, 3, device="meta"))


def test_weight_targets_of_another_dtype_keep_precision_and_range():
    z = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    counts = torch.tensor([[3, 0, 1, 0, 0], [0, 7, 0, 0, 11], [1, 1, 1, 1, 1]])
    (g_int,) = torch.autograd.grad(torchxc.sparsemax_loss(z, counts), z)  # normalised in float64, not float32
    (g_f64,) = torch.autograd.grad(torchxc.sparsemax_loss(z, counts.double()), z)
    assert max_err(g_int, g_f64) < 1e-15
    huge = torch.tensor([[3e38, 3e38, 0.0, 0.0, 0.0]])  # finite weights whose float32 sum overflows
    tiny = torch.tensor([[1e-39, 1e-39, 0.0, 0.0, 0.0]])  # subnormal weights whose sum's reciprocal overflows
    for dt in (torch.float16, torch.bfloat16):
        want = torchxc.sparsemax_loss(z[:1].detach().to(dt), torch.tensor([[0.5, 0.5, 0, 0, 0]]), reduction="none")
        for w in (huge, tiny):
            assert torch.equal(torchxc.sparsemax_loss(z[:1].detach().to(dt), w, reduction="none"), want)
    # bool and uint8 targets go to the op as they are (it divides by the row's sum): counts whose sum is past
    # float16's range (8192 x 255) give what the float64 path gives
    zz = torch.randn(2, 8192, generator=torch.Generator().manual_seed(5))
    counts8 = torch.full((2, 8192), 255, dtype=torch.uint8)
    counts8[1, :100] = 0
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        for target in (counts8, counts8 > 0):
            direct = torchxc.sparsemax_loss(zz.to(dt), target, reduction="none")
            assert max_err(direct, torchxc.sparsemax_loss(zz.to(dt), target.double(), reduction="none")) <= \
                (1e-5 if dt == torch.float32 else 1e-2) * direct.abs().max().item()
    # no classes: the op's own error for every target dtype (not an error from the normalisation)
    for target in (torch.zeros(3, 0, dtype=torch.bool), torch.zeros(3, 0, dtype=torch.float64)):
        with pytest.raises(RuntimeError, match="expected at least one class"):
            torchxc.sparsemax_loss(torch.zeros(3, 0), target)
    # float64 weights whose float64 sum overflows: the same proportions (the row was read as unlabelled, loss 0)
    huge64 = torch.tensor([[1e308, 1e308, 0.0, 0.0, 0.0]], dtype=torch.float64)
    for dt in (torch.float32, torch.float16):
        want = torchxc.sparsemax_loss(z[:1].detach().to(dt), torch.tensor([[0.5, 0.5, 0, 0, 0]]), reduction="none")
        assert torch.equal(torchxc.sparsemax_loss(z[:1].detach().to(dt), huge64, reduction="none"), want)
        for bad in ([1e308, -1.0, 0, 0, 0], [math.inf, 1.0, 0, 0, 0], [math.nan, 1.0, 0, 0, 0]):
            with pytest.raises(RuntimeError, match="must be finite and non-negative, but row 0"):
                torchxc.sparsemax_loss(z[:1].detach().to(dt), torch.tensor([bad], dtype=torch.float64))


def test_backward_op_checks_class_indices():
    z = torch.randn(3, 5)
    loss, stats = torch.ops.torchxc.sparsemax_loss(z, torch.tensor([0, 1, 2]), -100)
    for bad in (5, -100, 2 ** 40):
        with pytest.raises(RuntimeError, match=f"sparsemax_loss_backward: class index {bad} of row 1 is out of range"):
            torch.ops.torchxc.sparsemax_loss_backward(torch.ones(3), z, torch.tensor([0, bad, 2]), stats)


def test_float16_mean_over_many_rows_is_finite():
    z = torch.randn(40000, 16, generator=torch.Generator().manual_seed(0)).half()
    y = torch.randint(16, (40000,), generator=torch.Generator().manual_seed(1))
    mean = torchxc.sparsemax_loss(z, y)
    assert mean.dtype == torch.float16
    assert mean.float().item() == pytest.approx(torchxc.sparsemax_loss(z.float(), y).item(), rel=1e-3)


def test_no_double_backward():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    g, = torch.autograd.grad(torchxc.sparsemax_loss(x, torch.tensor([0, 1, 2])), x, create_graph=True)
    with pytest.raises(RuntimeError, match="torchxc::sparsemax_loss: double backward"):
        (g ** 2).sum().backward()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(0, 10 ** 6), st.floats(0.1, 10.0), st.floats(-1e3, 1e3))
def test_properties(rows, C, seed, scale, shift):
    """L >= 0; L = 0 when the target is sparsemax(z) itself; shift invariance; gradient = sparsemax(z) - q."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, C, generator=g, dtype=torch.float64) * scale
    q = normalise(torch.rand(rows, C, generator=g, dtype=torch.float64) * (torch.rand(rows, C, generator=g) < 0.5))
    q[q.sum(-1) == 0, 0] = 1.0  # every row has a label
    zq = z.clone().requires_grad_(True)
    loss = torchxc.sparsemax_loss(zq, q, reduction="none")
    assert (loss >= -1e-12).all()
    (grad,) = torch.autograd.grad(loss.sum(), zq)
    assert max_err(grad, torchxc.sparsemax(z) - q) < 1e-12
    shifted = torchxc.sparsemax_loss(z + shift, q, reduction="none")
    assert max_err(shifted, loss) < 1e-9 * max(1.0, abs(shift))
    assert torchxc.sparsemax_loss(z, torchxc.sparsemax(z), reduction="none").abs().max() < 1e-12


def test_empty_inputs():
    for shape in ((0, 5), (2, 0, 5)):
        z = torch.randn(shape, requires_grad=True)
        loss = torchxc.sparsemax_loss(z, torch.zeros(shape[:-1], dtype=torch.long), reduction="none")
        assert loss.shape == shape[:-1]
        loss.sum().backward()
        assert z.grad.shape == shape


def test_arguments_of_the_wrong_type_are_named():
    """A reduction passed in the dim slot failed in a bare comparison, dim=1.0 or ignore_index=True were taken as
    ints, a list target failed with an AttributeError, and uint64 class indices wrapped (2^64 - 1 became -1)."""
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    for kwargs, msg in (({"dim": "sum"}, "dim must be an int, got str 'sum'"),
                        ({"dim": 1.0}, "dim must be an int, got float 1.0"),
                        ({"dim": False}, "dim must be an int, got bool False"),
                        ({"ignore_index": True}, "ignore_index must be an int, got bool True")):
        with pytest.raises(TypeError, match=f"torchxc.sparsemax_loss: {msg}"):
            torchxc.sparsemax_loss(x, y, **kwargs)
    with pytest.raises(IndexError, match=r"torchxc.sparsemax_loss: dim must be in \[-2, 1\], got 2"):
        torchxc.sparsemax_loss(x, y, dim=2)
    with pytest.raises(TypeError, match="torchxc.sparsemax_loss: target must be a tensor, got list"):
        torchxc.sparsemax_loss(x, [0, 1, 2])
    with pytest.raises(ValueError, match="torchxc.sparsemax_loss: class indices of dtype uint64 are not supported"):
        torchxc.sparsemax_loss(x, y.to(torch.uint64))
    assert torchxc.sparsemax_loss(x, y.to(torch.uint32)).item() == torchxc.sparsemax_loss(x, y).item()
    for kwargs, msg in (({"dim": 0.0}, "dim must be an int"), ({"ignore_index": 1.5}, "ignore_index must be an int")):
        with pytest.raises(TypeError, match=f"SparsemaxLoss: {msg}"):
            torchxc.nn.SparsemaxLoss(**kwargs)


def test_backward_op_called_directly():
    """torch.ops.torchxc.sparsemax_loss_backward called directly (a review that fuzzed the ops): on an input that
    requires grad its output had a grad_fn that gave no gradient; a complex grad_loss lost its imaginary part (all
    zeros, a warning only); an input with no classes, which the forward refuses, was accepted."""
    ops = torch.ops.torchxc
    x, y = torch.randn(2, 5), torch.tensor([1, 2])
    _, stats = ops.sparsemax_loss(x, y)
    out = ops.sparsemax_loss_backward(torch.ones(2), x.clone().requires_grad_(), y, stats)
    assert not out.requires_grad and torch.allclose(out, torchxc.sparsemax(x) - torch.eye(5)[y])
    for bad in (torch.tensor([1j, 1j]), torch.ones(2, dtype=torch.long)):
        with pytest.raises(RuntimeError, match="sparsemax_loss_backward: expected a floating-point grad_loss"):
            ops.sparsemax_loss_backward(bad, x, y, stats)
    with pytest.raises(RuntimeError, match=r"sparsemax_loss_backward: expected at least one class"):
        ops.sparsemax_loss_backward(torch.ones(3), torch.randn(3, 0), torch.randn(3, 0), torch.zeros(3, 3))
