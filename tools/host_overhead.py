"""Host time per call of the torchxc ops and their PyTorch counterparts on tiny tensors, where the kernels cost
next to nothing: what a call costs in Python, the dispatcher and autograd before any GPU work. On CUDA this is
the floor under every forward+backward measurement of a small problem.

    python tools/host_overhead.py --device cuda
"""
import argparse
import time

import torch
import torch.nn.functional as F

import torchxc


def per_call_us(fn, device, n=2000):
    for _ in range(200):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) / n * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    x = torch.randn(8, 16, device=dev, requires_grad=True)
    g = torch.randn(8, 16, device=dev)
    hard = torch.rand(8, 16, device=dev) < 0.3
    cls = torch.randint(16, (8,), device=dev)
    cases = {
        "sparsemax fwd (raw op)": lambda: torch.ops.torchxc.sparsemax.default(x.detach(), -1),
        "sparsemax fwd (no grad)": lambda: torchxc.sparsemax(x.detach()),
        "sparsemax fwd (grad)": lambda: torchxc.sparsemax(x),
        "sparsemax fwd+bwd": lambda: torch.autograd.grad(torchxc.sparsemax(x), x, g),
        "softmax fwd+bwd": lambda: torch.autograd.grad(torch.softmax(x, -1), x, g),
        "sparsemax_loss fwd+bwd": lambda: torch.autograd.grad(torchxc.sparsemax_loss(x, cls), x),
        "cross_entropy fwd+bwd": lambda: torch.autograd.grad(F.cross_entropy(x, cls), x),
        "zlpr_loss fwd+bwd": lambda: torch.autograd.grad(torchxc.zlpr_loss(x, hard), x),
        "bce_with_logits fwd+bwd": lambda: torch.autograd.grad(
            F.binary_cross_entropy_with_logits(x, hard.to(x.dtype)), x),
    }
    print(f"host time per call, 8x16 float32 on {dev} (torch {torch.__version__})")
    for name, fn in cases.items():
        print(f"  {name:28s} {per_call_us(fn, dev):7.1f} us")


if __name__ == "__main__":
    main()
