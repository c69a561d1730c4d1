"""Device choice, made once per run and passed down (ARCHITECTURE rule 4)."""

from __future__ import annotations

from dqaudit.errors import DqauditError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(name: str = "auto") -> str:
    """Return a concrete torch device string for ``name`` (auto: cuda, then mps, then cpu)."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise DqauditError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if base == "cuda" and not torch.cuda.is_available():
        raise DqauditError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    if base == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise DqauditError("device 'mps' requested but it is not available; use --device cpu")
    return name
