"""Cross-fitted fine-tuning: out-of-fold posteriors p(y|x) from the encoder adapted to the dataset.

K-fold cross-fitting (the recipe of cleanlab's CIFAR-10N benchmarks, on the bundled encoders):
for each fold f a fresh copy of the pretrained encoder gets a linear head and is fine-tuned on
the labels of the other folds, then predicts fold f's images (image and mirror image, softmax
averaged). No sample's label reaches the model that scores it: fold f's model never sees a label
of fold f, neither as a training target nor in the choice of its epoch.

Noise-robust recipe (``FinetuneConfig``): LP-FT (Kumar et al., ICLR 2022): the head starts as
the linear probe of the pretrained features (L-BFGS), then every trained layer is fine-tuned at
a small learning rate (AdamW, warm-up, cosine decay) on soft cross-entropy with label smoothing,
random resized crops and mirror images; early stopping: a stratified tenth of each fold's
training part is held out (the inner split) and the epoch whose model agrees best with the
inner labels gives fold f's probabilities, the probe alone (epoch 0) among the candidates.
Noisy inner labels rank epochs as clean ones would in expectation when the noise does not
depend on the epoch, which it does not; memorising the training part's wrong labels shows as
a drop of inner agreement.

Two ways to train (``FinetuneConfig.train``):
    ``all``   every layer (a GPU's job); crops drawn on the device each step.
    ``last``  the lite encoders' last two stages and the head: the frozen trunk's activations
              (image and mirror) are computed once, then each fold trains only the rest (a
              CPU's share of the work, though still 23 minutes for 1,000 images on 2 cores;
              benchmarks/RESULTS.md); mirror images are its only augmentation.
    ``auto``  ``all`` on CUDA, ``last`` elsewhere.

Shapes: ``images`` (N, 3, S, S) uint8, ``label_counts`` (N, C), ``folds`` (N,) int in 0..K-1;
the result (N, C) float64 rows summing to 1. A fold's probabilities are saved to
``checkpoint_dir`` as soon as it ends, so a killed run resumes at the next fold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dqaudit.dataset import label_distribution, majority_labels
from dqaudit.embed.encoders import (
    DEFAULT_ENCODER,
)
from dqaudit.errors import DqauditError, InputError
from dqaudit.files import replacing
from dqaudit.scoring.finetune_net import (
    LAST_FIRST_BLOCK,
    Pixels,
    build_net,
    random_crops,
    trunk_activations,
)

logger = logging.getLogger("dqaudit")

TRAIN_MODES = ("auto", "all", "last")
INNER_FRACTION = 0.1  # of each fold's training part, held out to choose the epoch
PROBE_L2 = 1e-3  # weight decay of the head's linear-probe start (features of unit variance)


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of the cross-fitted fine-tuning (``dqaudit.scoring.finetune``)."""

    train: str = "auto"  # all, last, or auto (all on CUDA, last elsewhere)
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-4  # AdamW, encoder and head (which starts as the linear probe)
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    min_crop_area: float = 0.5  # random resized crops cover 50-100% of the image

    def __post_init__(self):
        if self.train not in TRAIN_MODES:
            raise DqauditError(f"unknown fine-tuning mode {self.train!r}; valid: "
                               f"{', '.join(TRAIN_MODES)}")
        if self.epochs < 1 or self.batch_size < 2:
            raise DqauditError("fine-tuning needs epochs >= 1 and batch_size >= 2")


@dataclass
class FinetuneResult:
    """Out-of-fold probabilities (N, C) and what made them (for summary.json)."""

    probs: np.ndarray
    info: dict


def train_mode(config: FinetuneConfig, device: str) -> str:
    """The mode ``config.train`` stands for on ``device``."""
    if config.train != "auto":
        return config.train
    return "all" if device.startswith("cuda") else "last"


# --------------------------------------------------------------------------- images






# --------------------------------------------------------------------------- networks








# --------------------------------------------------------------------------- cross-fitting


def inner_split(labels: np.ndarray, train: np.ndarray, *, seed: int) -> np.ndarray:
    """(N,) bool: a stratified ``INNER_FRACTION`` of the rows in ``train`` (at least one per
    class with three or more), held out from fitting to choose the epoch."""
    rng = np.random.default_rng(seed)
    inner = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels[train]):
        members = np.flatnonzero(train & (labels == c))
        if len(members) < 3:
            continue
        k = max(1, int(round(INNER_FRACTION * len(members))))
        inner[rng.choice(members, size=k, replace=False)] = True
    return inner


def run_key(*, encoder: str, image_size: int, mode: str, config: FinetuneConfig,
            label_counts: np.ndarray, labels: np.ndarray, folds: np.ndarray,
            digests: list[str], seed: int) -> str:
    """What a fold's saved probabilities depend on: a run with the same key may reuse them."""
    h = hashlib.sha1()
    h.update(json.dumps({"encoder": encoder, "image_size": image_size, "mode": mode,
                         "config": asdict(config), "seed": seed, "v": 1},
                        sort_keys=True).encode())
    h.update(np.ascontiguousarray(label_counts, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(folds, dtype=np.int64).tobytes())
    h.update("\n".join(digests).encode())
    return h.hexdigest()[:20]


def finetune_posteriors(images: np.ndarray, label_counts: np.ndarray, folds: np.ndarray, *,
                        encoder: str = DEFAULT_ENCODER, config: FinetuneConfig = FinetuneConfig(),
                        device: str = "cpu", seed: int,
                        checkpoint_dir: str | os.PathLike | None = None,
                        digests: list[str] | None = None, progress: bool = True,
                        labels: np.ndarray | None = None) -> FinetuneResult:
    """(N, C) out-of-fold probabilities of ``encoder`` fine-tuned K times (see module
    docstring). ``digests``: the files' content hashes, for the checkpoint key (None: the
    pixels are hashed). ``labels``: the given labels, for the inner split's strata and
    agreement (None: by the one tie rule, ``dataset.majority_labels``, as the linear probe).
    Deterministic under ``seed`` on a CPU; on CUDA up to the GPU's own nondeterminism (atomic
    adds in the backward convolutions)."""
    import torch

    n, c = label_counts.shape
    if images.shape[0] != n or images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images have shape {images.shape}; expected ({n}, 3, S, S)")
    k = int(folds.max()) + 1
    mode = train_mode(config, device)
    size = int(images.shape[-1])
    labels = majority_labels(label_counts) if labels is None else np.asarray(labels)
    dist = label_distribution(np.asarray(label_counts, dtype=np.float64))
    if digests is None:
        digests = [hashlib.blake2b(images[i].tobytes(), digest_size=8).hexdigest()
                   for i in range(n)]
    key = run_key(encoder=encoder, image_size=size, mode=mode, config=config,
                  label_counts=label_counts, labels=labels, folds=folds, digests=digests,
                  seed=seed)
    ckpt = Path(checkpoint_dir) / key if checkpoint_dir is not None else None
    probs = np.full((n, c), np.nan)
    fold_info = []
    t0 = time.perf_counter()
    cached = None  # ``last``: the frozen trunk's activations, shared by every fold
    for f in range(k):
        held = folds == f
        saved = ckpt / f"fold{f}.npz" if ckpt is not None else None
        if saved is not None and saved.exists():
            with np.load(saved) as z:
                probs[held] = z["probs"]
                fold_info.append(json.loads(str(z["info"])))
            _log(progress, f"dqaudit: fine-tune fold {f + 1}/{k}: done earlier (resumed)")
            continue
        if mode == "last" and cached is None:
            cached = trunk_activations(images, encoder=encoder, n_classes=c, device=device,
                                       batch_size=config.batch_size)
        torch.manual_seed(seed * 1000 + f)
        fold_probs, info = _fit_fold(images, dist, labels, held, encoder=encoder, mode=mode,
                                     config=config, device=device, seed=seed * 1000 + f,
                                     n_classes=c, progress=progress, fold=(f, k),
                                     cached=cached)
        probs[held] = fold_probs
        fold_info.append(info)
        if saved is not None:
            try:
                saved.parent.mkdir(parents=True, exist_ok=True)
                with replacing(saved) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, probs=fold_probs, info=json.dumps(info))
            except OSError as exc:
                logger.warning(f"dqaudit: cannot save fine-tuning checkpoints in {ckpt} "
                               f"({exc.strerror}); a killed run will start again")
                ckpt = None
    probs = np.clip(probs, 1e-12, None)
    probs /= probs.sum(axis=1, keepdims=True)
    info = {"method": "finetune", "encoder": encoder, "train": mode, "device": device,
            "image_size": size, "n_folds": k, "config": asdict(config),
            "epochs_chosen": [fi["best_epoch"] for fi in fold_info],
            "inner_agreement": [fi["inner_agreement"] for fi in fold_info],
            "seconds": round(time.perf_counter() - t0, 2),
            "fold_seconds": [fi["seconds"] for fi in fold_info]}
    return FinetuneResult(probs=probs, info=info)


def _fit_fold(images, dist, labels, held, *, encoder, mode, config, device, seed, n_classes,
              progress, fold, cached=None):
    """Fine-tune on the rows not ``held`` (less the inner split); return the held-out rows'
    probabilities at the epoch of best inner agreement, and the fold's record."""
    import torch

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    train_all = ~held
    inner = inner_split(labels, train_all, seed=seed)
    fit_rows = np.flatnonzero(train_all & ~inner)
    inner_rows, held_rows = np.flatnonzero(inner), np.flatnonzero(held)
    net, prep = build_net(encoder, images.shape[-1], n_classes, mode)
    net = net.to(device)
    is_cuda = device.startswith("cuda")
    if is_cuda:
        net = net.to(memory_format=torch.channels_last)
    eps = config.label_smoothing
    targets = torch.as_tensor(dist * (1 - eps) + eps / n_classes, dtype=torch.float32,
                              device=device)
    prepared = Pixels(images, prep, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=is_cuda)

    def acts_of(rows, *, train: bool):
        if cached is None:
            theta = random_crops(len(rows), min_area=config.min_crop_area, rng=rng) \
                if train else None
            return net.trunk(prepared(rows, theta=theta))
        mirror = rng.random(len(rows)) < 0.5 if train else np.zeros(len(rows), dtype=bool)
        out = []
        for plain, flipped in cached:
            a = np.where(mirror[:, None, None, None], flipped[rows], plain[rows])
            out.append(torch.from_numpy(a).to(device).float())
        return out

    def predict(rows):
        """(len(rows), C) softmax averaged over the image and its mirror."""
        net.eval()
        out = []
        with torch.no_grad(), autocast:
            chunk = 2 * config.batch_size
            for s in range(0, len(rows), chunk):
                r = rows[s:s + chunk]
                k = len(r)
                if is_cuda and k < chunk and len(rows) > chunk:
                    r = np.resize(r, chunk)  # padded: one shape for the GPU's kernels
                if cached is None:
                    x = prepared(r)
                    views = [net.trunk(x), net.trunk(torch.flip(x, dims=[3]))]
                else:
                    views = [[torch.from_numpy(v[j][r]).to(device).float() for v in cached]
                             for j in (0, 1)]
                p = sum(torch.softmax(net(a).float(), dim=1) for a in views) / 2
                out.append(p[:k].cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    # LP-FT (Kumar et al., ICLR 2022): the head starts as the linear probe of the pretrained
    # features, so the first steps do not distort the features to fit a random head
    _probe_head(net, acts_of, fit_rows, targets, config=config, autocast=autocast)
    enc_params, head_params = net.trained_parameters()
    opt = torch.optim.AdamW([{"params": enc_params, "lr": config.lr},
                             {"params": head_params, "lr": config.lr}],
                            weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(fit_rows))
    steps_per_epoch = max(1, len(fit_rows) // batch)
    total = steps_per_epoch * config.epochs
    warm = max(1, int(config.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - warm) / max(1, total - warm)))))
    # the probe alone (epoch 0) is a candidate too; the first epochs of fine-tuning are still
    # warming up, so the choice is among the probe and the later two thirds
    best = (-1.0, -1, None)
    first_eval = max(1, config.epochs // 3)
    for epoch in range(0, config.epochs + 1):
        if epoch > 0:  # epoch 0: the linear probe's start alone
            _train_epoch(net, acts_of, rng.permutation(fit_rows), targets, opt, sched,
                         batch=batch, autocast=autocast, device=device,
                         frozen_trunk=cached is not None)
        if 0 < epoch < first_eval:
            _log(progress, f"dqaudit: fine-tune fold {fold[0] + 1}/{fold[1]} epoch {epoch}/"
                           f"{config.epochs}")
            continue
        inner_p = predict(inner_rows) if len(inner_rows) else None
        agreement = float((inner_p.argmax(1) == labels[inner_rows]).mean()) \
            if inner_p is not None else float(epoch)
        _log(progress, f"dqaudit: fine-tune fold {fold[0] + 1}/{fold[1]} epoch {epoch}/"
                       f"{config.epochs}: inner agreement {agreement:.3f}")
        if agreement > best[0]:
            best = (agreement, epoch, predict(held_rows))
    agreement, epoch, held_probs = best
    info = {"fold": fold[0], "best_epoch": epoch, "inner_agreement": round(agreement, 4),
            "n_fit": int(len(fit_rows)), "n_inner": int(len(inner_rows)),
            "seconds": round(time.perf_counter() - t0, 2)}
    return held_probs, info


def _train_epoch(net, acts_of, order, targets, opt, sched, *, batch, autocast, device,
                 frozen_trunk: bool) -> None:
    """One pass over ``order`` in whole batches (one shape for every step, so the GPU's kernels
    are chosen once): soft cross-entropy on the smoothed targets."""
    import torch

    net.train()
    if frozen_trunk:
        net.parts.eval()  # the frozen trunk's batch norms keep their ImageNet statistics
        for m in net.parts:
            m.blocks[LAST_FIRST_BLOCK:].train()
    for s in range(0, len(order) - batch + 1, batch):
        rows = np.sort(order[s:s + batch])
        with autocast:
            logits = net(acts_of(rows, train=True)).float()
        loss = -(targets[torch.as_tensor(rows, device=device)]
                 * torch.log_softmax(logits, dim=1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def _probe_head(net, acts_of, rows, targets, *, config, autocast, max_iter: int = 100):
    """Fit ``net.head`` to the frozen network's features of ``rows`` (no augmentation):
    multinomial logistic regression on the smoothed targets, L2 weight ``PROBE_L2``, L-BFGS."""
    import torch

    net.eval()
    feats = []
    with torch.no_grad(), autocast:
        for s in range(0, len(rows), 2 * config.batch_size):
            feats.append(net.features(acts_of(rows[s:s + 2 * config.batch_size],
                                              train=False)).float())
    x = torch.cat(feats)
    t = targets[torch.as_tensor(rows, device=x.device)]
    head = net.head
    opt = torch.optim.LBFGS(list(head.parameters()), lr=1.0, max_iter=max_iter,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(t * torch.log_softmax(head(x), dim=1)).sum(1).mean() + PROBE_L2 * (
            head.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)






def _log(progress: bool, message: str) -> None:
    logger.log(logging.INFO if progress else logging.DEBUG, message)
