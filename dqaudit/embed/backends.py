"""Inference backends for the encoder's forward pass on CPU: torch, or OpenVINO (fp32 or bf16).

``with_backend`` swaps an ``Encoder``'s ``forward`` for an OpenVINO compiled model of the same
network: converted once from the torch module (``openvino.convert_model``), saved in the model
cache (``model_cache_dir()/openvino/<key>.xml``, keyed by model identity, input size and the
OpenVINO version) and compiled for the CPU with fp32 inference precision, so the embeddings
match torch's (cosine at least 0.9999 per image; benchmarks/RESULTS.md, "CPU inference
backend"). ``auto`` takes OpenVINO on CPU when it is installed, torch otherwise and on GPUs.

``openvino-bf16`` compiles the same model with bf16 inference precision, on CPUs that have it
(AVX512-BF16 or AMX; OpenVINO's ``OPTIMIZATION_CAPABILITIES``), fp32 with a warning elsewhere.
It is never chosen by ``auto``: its embeddings differ from fp32's in the third decimal and
depend on the CPU, so the same images would give different tables on different machines.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import warnings
from dataclasses import replace
from pathlib import Path

from dqaudit.embed.encoders import Encoder, all_lite
from dqaudit.errors import DqauditError

BACKENDS = ("auto", "torch", "openvino", "openvino-bf16")
# the inference precision each OpenVINO backend compiles with
_PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}
OPENVINO_BACKENDS = tuple(_PRECISION)
ENV_MODEL_CACHE = "DQAUDIT_MODEL_CACHE"


def model_cache_dir() -> Path:
    """Where converted models are kept: ``$DQAUDIT_MODEL_CACHE``, else
    ``~/.cache/dqaudit/models``."""
    if os.environ.get(ENV_MODEL_CACHE):
        return Path(os.environ[ENV_MODEL_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dqaudit" / "models"


def resolve_backend(name: str, device: str, *, model: str = "lite0") -> str:
    """The backend ``name`` stands for on ``device``: ``auto`` is OpenVINO on CPU for the lite
    encoders (the ones measured) when the package is installed, else torch; OpenVINO asked for
    on a GPU or without the package is an error that names the fix."""
    if name not in BACKENDS:
        raise DqauditError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    available = importlib.util.find_spec("openvino") is not None
    if name == "auto":
        return "openvino" if available and device == "cpu" and all_lite(model) else "torch"
    if name in OPENVINO_BACKENDS and device != "cpu":
        raise DqauditError(f"--backend {name} runs on the CPU, not {device}; pass "
                           "--device cpu or --backend torch")
    if name in OPENVINO_BACKENDS and not available:
        raise DqauditError(f"--backend {name} needs the openvino package: pip install openvino")
    return name


def with_backend(encoder: Encoder, backend: str, *, cache_dir: str | os.PathLike | None = None,
                 required: bool = False) -> Encoder:
    """``encoder`` running on ``backend`` (already resolved); torch returns it unchanged. A
    network OpenVINO cannot convert runs on torch with a warning, or (``required``: the user
    asked for OpenVINO by name) is an error."""
    if backend == "torch":
        return encoder
    if _PRECISION[backend] == "bf16" and not cpu_has_bf16():
        logging.getLogger("dqaudit").warning(
            "dqaudit: this CPU has no bf16 support (AVX512-BF16 or AMX); running OpenVINO in fp32")
        backend = "openvino"
    try:
        forward = _openvino_forward(encoder, Path(cache_dir) if cache_dir else model_cache_dir(),
                                    precision=_PRECISION[backend])
    except Exception as exc:  # noqa: BLE001 - any conversion failure falls back to torch
        if required:
            raise DqauditError(f"OpenVINO could not convert {encoder.name} "
                               f"({str(exc).splitlines()[0][:200]}); use --backend torch"
                               ) from exc
        logging.getLogger("dqaudit").warning(
            f"dqaudit: OpenVINO could not convert {encoder.name}; running it with torch")
        return encoder
    return replace(encoder, forward=forward, backend=backend)


def cpu_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 on this CPU (AVX512-BF16 or AMX)."""
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@functools.cache
def openvino_core():
    """The process's one ``openvino.Core``, kept until the process exits.

    Each Core loads its own CPU plugin, and the plugin (OpenVINO 2026.4 at least) points the
    calling thread's alternate signal stack (``sigaltstack``) at a buffer of its own, putting
    back the stack it found when it is destroyed. Two Cores destroyed in the order they were
    made leave the thread on the first plugin's unmapped buffer, and the next signal handled in
    Python (SIGCHLD from a DataLoader worker or any subprocess) kills the process with SIGSEGV.
    One Core that lives as long as the process makes that order impossible.
    """
    import openvino as ov

    return ov.Core()


def _openvino_forward(encoder: Encoder, cache_dir: Path, *, precision: str = "f32"):
    import numpy as np
    import openvino as ov
    import torch

    class Forward(torch.nn.Module):
        """The encoder's forward callable as a module (what OpenVINO converts)."""

        def __init__(self):
            super().__init__()
            self.module = encoder.module

        def forward(self, x):
            return encoder.forward(x)

    side = encoder.preprocessing.image_size
    key = hashlib.sha1(f"{encoder.identity}\n{side}\n{ov.__version__}".encode()).hexdigest()[:16]
    path = cache_dir / "openvino" / f"{key}.xml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # the conversion traces the module with torch.jit, which warns of its own deprecation
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ov.convert_model(Forward().eval(), example_input=torch.zeros(1, 3, side, side),
                                     input=[(-1, 3, side, side)])
        tmp = path.with_name(f".{key}.{os.getpid()}.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)  # the .xml last: its presence means both files are whole
    compiled = openvino_core().compile_model(str(path), "CPU",
                                             {"INFERENCE_PRECISION_HINT": precision})

    def forward(x):
        out = compiled(np.ascontiguousarray(x.detach().float().contiguous().numpy()))[0]
        return torch.from_numpy(np.asarray(out))

    return forward
