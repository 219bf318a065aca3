"""Build-level checks: op registrations and the error of a build without CUDA kernels."""
import pytest
import torch

import torchxc


def torchxc_ops():
    return sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("torchxc::"))


def test_every_op_has_cpu_and_cuda_kernels():
    ops = torchxc_ops()
    assert "torchxc::sparsemax" in ops
    for name in ops:
        if torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeExplicitAutograd"):
            continue  # written in Python on top of the other ops (e.g. fused_linear_zlpr): any device
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), name
        # a real CUDA kernel, or (CPU-only build) the stub with a clear error: never the dispatcher's generic one
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"), name


@pytest.mark.skipif(torchxc.cuda_kernels_built(), reason="this build has CUDA kernels")
def test_cpu_only_build_names_the_missing_cuda_kernels():
    op = torch.ops.torchxc.sparsemax.default
    with pytest.raises(RuntimeError, match=r"torchxc::sparsemax: this build of torchxc has no CUDA kernels"):
        op.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA), torch.ones(3), -1)


def test_public_api():
    assert callable(torchxc.sparsemax) and callable(torchxc.sparsemax_loss)
    assert isinstance(torchxc.cuda_kernels_built(), bool)
    for fn in (torchxc.sparsemax, torchxc.sparsemax_loss):
        assert fn.__doc__ and "Example" in fn.__doc__


def test_installed_package_is_marked_typed():
    """PEP 561: the installed package carries py.typed, so type checkers read the wrappers' annotations."""
    import os
    assert os.path.isfile(os.path.join(os.path.dirname(torchxc.__file__), "py.typed"))


@pytest.mark.skipif(torchxc.cuda_kernels_built(), reason="this build has CUDA kernels")
def test_cpu_only_build_names_the_fused_linear_op():
    """fused_linear_zlpr runs the zlpr kernels itself: the error names the op the user called, not the inner one."""
    import torchxc.fused_linear as fl
    from torchxc.fused_linear import _require_device_kernels
    _require_device_kernels(torch.device("cpu"))
    seen = []  # the op itself checks the device it runs on, before any inner zlpr kernel (which would raise first
    # under its own name): labels of 2.0, which the inner kernel refuses, must not be reached

    class Checked(Exception):
        pass

    def check(device):
        seen.append(device)
        raise Checked

    original = fl._require_device_kernels
    try:
        fl._require_device_kernels = check
        with pytest.raises(Checked):
            torchxc.fused_linear_zlpr_loss(torch.randn(3, 4), torch.randn(5, 4), None, torch.full((3, 5), 2.0))
    finally:
        fl._require_device_kernels = original
    assert seen == [torch.device("cpu")]
    with pytest.raises(RuntimeError, match=r"^torchxc::fused_linear_zlpr: this build of torchxc has no CUDA kernels"):
        _require_device_kernels(torch.device("cuda", 0))


def test_loss_modules_refuse_a_bad_reduction_when_built():
    for cls in (torchxc.nn.SparsemaxLoss, torchxc.nn.ZLPRLoss):
        with pytest.raises(ValueError, match=f"{cls.__name__}: reduction must be one of"):
            cls(reduction="avg")  # it was accepted and failed at the first forward
        assert cls(reduction="sum").reduction == "sum"


def _bad_calls():
    """(op, args, what the message names) for calls every kernel refuses on its arguments' dtype or rank."""
    ops, f, d = torch.ops.torchxc, torch.randn(3, 5), torch.randn(3, 5, dtype=torch.float64)
    w, b, l2l = torch.randn(7, 2), torch.randn(7), torch.arange(5)
    z, lab = torch.randn(3, 2), torch.zeros(3, 2, dtype=torch.long)
    _, stats = ops.sparsemax_loss(f, torch.zeros(3, dtype=torch.long))
    return [
        (ops.sparsemax.default, (torch.zeros(3, 5, dtype=torch.long), -1), "input"),
        (ops.sparsemax_backward.default, (d, f, -1), "grad_output"),
        (ops.sparsemax_loss.default, (torch.tensor(1.0), torch.tensor(0), -100), "input"),
        (ops.sparsemax_loss_backward.default, (torch.ones(3, dtype=torch.long), f, torch.zeros(3, dtype=torch.long),
                                               stats), "grad_loss"),
        (ops.zlpr_loss.default, (torch.tensor(1.0), torch.tensor(1.0), None, True, 1.0), "input"),
        (ops.zlpr_loss.default, (f, torch.ones(3, 5, dtype=torch.long), None, True, 1.0), "target"),
        (ops.zlpr_loss.default, (f, f > 0, torch.ones(5), True, 1.0), "mask"),
        (ops.zlpr_loss_sparse.default, (f, torch.zeros(3, 1, dtype=torch.int32), None, True, 1.0), "positives"),
        (ops.tree_sample.default, (z[0], w, b, torch.arange(8), 5, 4, 0), "z"),
        (ops.tree_sample.default, (z.half(), w, b, torch.arange(8), 5, 4, 0), "z"),
        (ops.tree_sample.default, (z, w, b, torch.arange(8), 5, -1, 0), "num_samples"),
        (ops.tree_log_prob.default, (z, w, b, l2l, lab[0]), "labels"),
        (ops.tree_log_prob.default, (z, w, b, l2l, lab[:2]), "labels"),
        (ops.tree_log_prob.default, (z, w, b, l2l.int(), lab), "label_to_leaf"),
        (ops.tree_log_prob.default, (z, w, b, l2l[:0], lab), "label_to_leaf"),
        (ops.tree_log_prob_backward.default, (torch.ones(3, 2, dtype=torch.long), z, w, b, l2l, lab), "grad"),
        (ops.tree_log_prob_all.default, (z[None], w, b, l2l), "z"),
        (ops.tree_log_prob_all.default, (z, w.double(), b.double(), l2l), "node_weight"),
        (ops.tree_log_prob_all.default, (z, torch.randn(7, 3), b, l2l), "node_weight"),
        (ops.sparsemax_loss.default, (f, torch.zeros(3, dtype=torch.int32), -100), "target"),
        (ops.sparsemax_loss.default, (f, d, -100), "target"),
        (ops.zlpr_loss_sparse.default, (f, torch.zeros(3, dtype=torch.long), None, True, 1.0), "positives"),
        (ops.tree_fit_newton.default, (d, torch.tensor([0, 3]), torch.zeros(1, 6), f[:, 0], torch.ones(6), 1, 4.0),
         "z"),
        (ops.tree_fit_newton.default, (f, torch.tensor([0, 3]), torch.zeros(1, 5), f[:, 0], torch.ones(6), 1, 4.0),
         "theta"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_fake_kernels_refuse_what_the_kernels_refuse(case):
    """A fake (meta) kernel that skipped the kernels' dtype and rank checks returned outputs for calls the kernels
    refuse (sparsemax of an int64 tensor gave an int64 output, tree_sample of a 1-d z an output of its length), so
    torch.compile traced them and meta tensors gave shapes for them; both now refuse, naming the op and argument."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    op, args, what = _bad_calls()[case]
    name = op._schema.name
    with pytest.raises(RuntimeError, match=f"{name}: .*{what}"):
        op(*args)
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(RuntimeError, match=f"{name}: .*{what}"):
            op(*fake)
