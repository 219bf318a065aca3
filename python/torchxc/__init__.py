"""torchxc: fast, exact PyTorch ops for multi-label and extreme classification.

Ops are registered with the PyTorch dispatcher as ``torch.ops.torchxc.*`` (CPU and, when built with CUDA,
CUDA kernels) and wrapped here with typed, documented Python functions that work under autograd,
``torch.compile(fullgraph=True)`` and ``torch.library.opcheck``.
"""
import torch  # noqa: F401  (libtorch must be loaded before _C)

from . import _C  # noqa: F401  (loads the shared library, which registers the ops)
from . import nn
from .fused_linear import fused_linear_zlpr_loss
from .sampling import (
    TreeSampler,
    WeightTree,
    adversarial_negative_sampling_loss,
    corrected_logits,
    sampled_softmax_loss,
)
from .sparsemax import sparsemax, sparsemax_loss
from .zlpr import zlpr_loss, zlpr_loss_sparse, zlpr_probs

__version__ = "0.1.0"

__all__ = [
    "TreeSampler",
    "WeightTree",
    "adversarial_negative_sampling_loss",
    "corrected_logits",
    "cuda_kernels_built",
    "fused_linear_zlpr_loss",
    "nn",
    "sampled_softmax_loss",
    "sparsemax",
    "sparsemax_loss",
    "zlpr_loss",
    "zlpr_loss_sparse",
    "zlpr_probs",
]


def __getattr__(name: str):
    """torchxc.datasets, torchxc.models and torchxc.temporal_sets load on first use (they pull in more modules)."""
    if name in ("datasets", "models", "temporal_sets"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'torchxc' has no attribute {name!r}")


def cuda_kernels_built() -> bool:
    """True when this build of torchxc contains CUDA kernels (independent of whether a GPU is present)."""
    return bool(_C.with_cuda)
