"""Device names ("auto", "cpu", "cuda", "cuda:1") to torch devices, with a clear error when CUDA is missing."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; a CUDA device without CUDA is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r}: {error}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        reason = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ValueError(f"device {str(device)!r}: CUDA is not available ({reason}); use 'cpu' or 'auto'")
    return chosen


def use_tf32(enabled: bool) -> None:
    """Let CUDA matmuls and cuDNN convolutions use TF32 (``enabled``) or keep them in full float32; a
    process-wide switch, set explicitly either way so a run does not inherit another library's choice."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
