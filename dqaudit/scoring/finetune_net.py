"""The network that cross-fitted fine-tuning trains, and its inputs: images decoded once to
uint8 (``decode_images``), random resized crops (``random_crops``, ``Pixels``), the bundled
encoder with a new head (``build_net``; ``train="last"`` trains the last blocks only, from
``LAST_FIRST_BLOCK``) and its frozen trunk's activations (``trunk_activations``)."""

from __future__ import annotations

import math

import numpy as np

from dqaudit.embed.encoders import (
    LITE_STAGES,
    Preprocessing,
    all_lite,
    load_encoder,
)
from dqaudit.embed.loader import ImageFolderDataset, collate
from dqaudit.errors import InputError

# the first EfficientNet-Lite block that ``last`` trains (blocks 5 and 6: the last two stages)
LAST_FIRST_BLOCK = 5


def decode_images(paths: list[str], *, image_size: int, num_workers: int = 0) -> np.ndarray:
    """(N, 3, S, S) uint8: every file decoded and resized as the embed stage does
    (``embed.loader.decode``), held in memory (150 KB an image at 224 px). A file that fails
    here (it decoded at the scan) is an error."""
    import torch

    prep = Preprocessing(image_size=image_size, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    loader = torch.utils.data.DataLoader(
        ImageFolderDataset(paths, list(range(len(paths))), prep), batch_size=64,
        num_workers=num_workers, collate_fn=collate)
    for idx, batch, _, failed in loader:
        if failed:
            i, reason = failed[0]
            raise InputError(f"{paths[i]}: {reason}; fine-tuning needs every image the scan "
                             "decoded (was the file changed?)")
        out[idx.numpy()] = batch.numpy()
    return out


def random_crops(n: int, *, min_area: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 2, 3) affine matrices (``torch.nn.functional.affine_grid``, normalised coordinates)
    of random resized crops: area fraction in [min_area, 1], aspect ratio in [3/4, 4/3]
    (log-uniform), a random position inside the image, mirrored with probability 1/2."""
    area = rng.uniform(min_area, 1.0, n)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), n))
    w = np.minimum(np.sqrt(area * ratio), 1.0)
    h = np.minimum(np.sqrt(area / ratio), 1.0)
    cx = rng.uniform(-1, 1, n) * (1 - w)
    cy = rng.uniform(-1, 1, n) * (1 - h)
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def lite_models(encoder) -> list | None:
    """The timm EfficientNet-Lite networks inside a lite encoder (one per ``+`` part, in
    order); None for other encoders and for lite head features (the generic path)."""
    if not all_lite(encoder.name) or ":" in encoder.name:
        return None
    module = encoder.module
    return list(module) if "+" in encoder.name else [module]


def build_net(encoder_name: str, image_size: int, n_classes: int, mode: str):
    """A fresh copy of the pretrained encoder with a linear head (zero until the probe fits
    it), split into a frozen trunk and a trained rest."""
    import torch

    encoder = load_encoder(encoder_name, image_size=image_size if all_lite(encoder_name)
                           else None, flip_tta=False)
    lite = lite_models(encoder)
    if mode == "last" and lite is None:
        raise InputError(f"fine-tuning only the last stages needs lite encoders (not "
                         f"{encoder_name}); use --finetune-train all (on a GPU)")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = LAST_FIRST_BLOCK if mode == "last" else 0
            self.parts = torch.nn.ModuleList(lite) if lite is not None else encoder.module
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.dim, n_classes)
            torch.nn.init.zeros_(self.head.weight)
            torch.nn.init.zeros_(self.head.bias)

        def trunk(self, x):
            """The frozen part's output: per lite part, the activation before block
            ``first`` (``x`` itself when everything trains)."""
            if self.first == 0:
                return [x]
            acts = []
            with torch.no_grad():
                for m in self.parts:
                    a = m.bn1(m.conv_stem(x))
                    for block in m.blocks[:self.first]:
                        a = block(a)
                    acts.append(a)
            return acts

        def features(self, acts):
            if lite is None:
                feats = self.encoder.forward(acts[0])
            else:
                pooled = []
                for k, m in enumerate(self.parts):
                    if self.first == 0:
                        a = m.bn1(m.conv_stem(acts[0]))
                        start = 0
                    else:
                        a, start = acts[k], self.first
                    # a frozen stage's pooled output is still a feature (stage 4 in ``last``)
                    if start - 1 in LITE_STAGES:
                        pooled.append(pool(a))
                    for i in range(start, max(LITE_STAGES) + 1):
                        a = m.blocks[i](a)
                        if i in LITE_STAGES:
                            pooled.append(pool(a))
                feats = torch.cat(pooled, dim=1)
            feats = feats.float()
            # unit-variance components on average, whatever the encoder's scale
            return torch.nn.functional.normalize(feats, dim=1) * math.sqrt(feats.shape[1])

        def forward(self, acts):
            return self.head(self.features(acts))

        def trained_parameters(self):
            """(encoder's, head's) trainable parameters."""
            if lite is None or self.first == 0:
                enc = [p for p in self.parts.parameters()]
            else:
                enc = [p for m in self.parts for b in m.blocks[self.first:max(LITE_STAGES) + 1]
                       for p in b.parameters()]
            return enc, list(self.head.parameters())

    net = Net()
    for p in net.parameters():
        p.requires_grad_(False)
    enc, head = net.trained_parameters()
    for p in enc + head:
        p.requires_grad_(True)
    return net, encoder.preprocessing


def pool(a):
    import torch

    return torch.nn.functional.normalize(a.float().mean((2, 3)), dim=1)


class Pixels:
    """Rows of the (N, 3, S, S) uint8 images as normalised float batches on the device, with
    optional crops (``random_crops`` matrices); the whole array is moved to the GPU when it is
    small against the GPU's free memory."""

    def __init__(self, images: np.ndarray, prep, device: str):
        import torch

        self.device, self.cuda = device, device.startswith("cuda")
        self.pixels = torch.from_numpy(np.ascontiguousarray(images))
        if self.cuda and images.nbytes < 0.25 * torch.cuda.mem_get_info(device)[0]:
            self.pixels = self.pixels.to(device)
        self.mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(self, rows, *, theta=None):
        import torch

        x = self.pixels[torch.as_tensor(rows)].to(self.device, non_blocking=True).float()
        if theta is not None:
            grid = torch.nn.functional.affine_grid(
                torch.as_tensor(theta, device=self.device), list(x.shape), align_corners=False)
            x = torch.nn.functional.grid_sample(x, grid, mode="bilinear",
                                                padding_mode="reflection", align_corners=False)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x


def trunk_activations(images: np.ndarray, *, encoder: str, n_classes: int, device: str,
                      batch_size: int) -> list:
    """Per lite part of ``encoder``, (plain, mirrored) float16 arrays (N, C', h, w): the
    frozen trunk's output (blocks before ``LAST_FIRST_BLOCK``) for each image and its
    mirror image, computed once for every fold of ``last``."""
    import torch

    net, prep = build_net(encoder, images.shape[-1], n_classes, "last")
    net = net.to(device).eval()
    prepared = Pixels(images, prep, device)
    n = len(images)
    parts: list = []
    with torch.no_grad():
        for s in range(0, n, batch_size):
            rows = np.arange(s, min(n, s + batch_size))
            x = prepared(rows)
            plain, flipped = net.trunk(x), net.trunk(torch.flip(x, dims=[3]))
            for k, (a, b) in enumerate(zip(plain, flipped)):
                if len(parts) <= k:
                    shape = (n, *a.shape[1:])
                    parts.append((np.empty(shape, np.float16), np.empty(shape, np.float16)))
                parts[k][0][rows] = a.float().cpu().numpy()
                parts[k][1][rows] = b.float().cpu().numpy()
    return parts
