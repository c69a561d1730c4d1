import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from dqaudit.embed import embed_images, load_encoder
from dqaudit.embed.cache import EmbeddingCache
from dqaudit.embed.loader import decode, to_rgb
from dqaudit.errors import DqauditError


@pytest.fixture(scope="module")
def lite0():
    return load_encoder("lite0")


def test_lite0_embeddings_are_normalised_and_discriminative(class_tree, lite0, tmp_path):
    paths = sorted(str(p) for p in class_tree.rglob("*.png"))
    res = embed_images(paths, model=lite0, device="cpu", cache_dir=tmp_path / "c",
                       progress=False, num_workers=0)
    assert res.embeddings.shape == (12, 624) and res.embeddings.dtype == np.float32
    assert res.ok.all() and not res.failures
    np.testing.assert_allclose(np.linalg.norm(res.embeddings, axis=1), 1.0, atol=1e-5)
    # images of one colour are closer to each other than to other colours
    sims = res.embeddings @ res.embeddings.T
    group = np.repeat(np.arange(3), 4)
    same = sims[group[:, None] == group[None, :]].mean()
    other = sims[group[:, None] != group[None, :]].mean()
    assert same > other + 0.05
    assert res.info["model"] == "lite0" and res.info["n_embedded"] == 12


def test_lite0_stage_features_pool_the_networks_own_stages(lite0):
    """The default features are the pooled outputs of stages 4-6 of the full network (checked
    against forward hooks on timm's own forward), each unit-norm; lite0:head is the head."""
    import torch

    from dqaudit.embed.encoders import LITE_STAGES

    model = lite0.module
    seen = {}
    hooks = [model.blocks[i].register_forward_hook(
        lambda _m, _in, out, i=i: seen.__setitem__(i, out.mean((2, 3)))) for i in LITE_STAGES]
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            head = model(x)
            feats = lite0.forward(x)
    finally:
        for h in hooks:
            h.remove()
    expected = torch.cat([torch.nn.functional.normalize(seen[i], dim=1) for i in LITE_STAGES],
                         dim=1)
    assert feats.shape == (3, lite0.dim) == (3, 624)
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    head_enc = load_encoder("lite0:head")
    assert head_enc.dim == 1280 and head_enc.cache_key() != lite0.cache_key()
    with torch.no_grad():  # same weights file, another model instance
        torch.testing.assert_close(head_enc.forward(x), head, rtol=1e-4, atol=1e-4)
    with pytest.raises(DqauditError, match="lite0 features"):
        load_encoder("lite0:nope")


def test_lite2_loads_its_own_weights_by_position():
    import torch

    enc = load_encoder("lite2")
    assert enc.dim == 120 + 208 + 352 and "efficientnet_lite2" in enc.identity
    assert enc.cache_key() != load_encoder("lite1").cache_key()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = enc.forward(x)
    # three unit-norm stage blocks, and ImageNet weights, not timm's random initialisation
    assert feats.shape == (2, 680)
    torch.testing.assert_close(feats.norm(dim=1), torch.full((2,), 3 ** 0.5))
    first = enc.module.conv_stem.weight
    import timm
    assert not torch.equal(first, timm.create_model("efficientnet_lite2").conv_stem.weight)


def test_combined_encoder_puts_features_side_by_side(lite0):
    import torch

    both = load_encoder("lite0+lite2", image_size=96)
    lite2 = load_encoder("lite2")
    assert both.dim == lite0.dim + lite2.dim and both.name == "lite0+lite2"
    assert both.preprocessing.image_size == 96 and both.flip_tta
    assert len({both.cache_key(), lite0.cache_key(), lite2.cache_key()}) == 3
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.cat([lite0.forward(x), lite2.forward(x)], dim=1)
        torch.testing.assert_close(both.forward(x), expected)
    # the combined module holds both networks, so moving it moves both
    assert sum(1 for _ in both.module.parameters()) == (
        sum(1 for _ in lite0.module.parameters()) + sum(1 for _ in lite2.module.parameters()))
    with pytest.raises(DqauditError, match="two or more different"):
        load_encoder("lite0+lite0")
    with pytest.raises(DqauditError, match="unknown model"):
        load_encoder("lite0+openclip:ViT-B-32/x")


def test_odd_images_decode_or_are_reported(tmp_path, lite0):
    d = tmp_path / "odd"
    good = {
        "gray.png": make_image(d / "gray.png", (100, 100, 100), mode="L"),
        "cmyk.jpg": make_image(d / "cmyk.jpg", (200, 10, 10), mode="CMYK", fmt="JPEG"),
        "rgba.png": make_image(d / "rgba.png", (10, 200, 10), mode="RGBA"),
        "palette.gif": make_image(d / "palette.gif", (10, 10, 200), mode="P"),
    }
    sixteen = d / "sixteen.png"
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(sixteen)
    good["sixteen.png"] = sixteen
    full = make_image(d / "full.jpg", (50, 60, 70), size=64, fmt="JPEG")
    truncated = d / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    fake = d / "fake.jpg"
    fake.write_text("this is not an image")
    paths = [str(p) for p in good.values()] + [str(truncated), str(fake)]
    res = embed_images(paths, model=lite0, device="cpu", use_cache=False, progress=False,
                       num_workers=0)
    assert res.ok.tolist() == [True] * 5 + [False, False]
    reasons = {os.path.basename(f["path"]): f["reason"] for f in res.failures}
    assert reasons["truncated.jpg"] == "truncated image data"
    assert "not a decodable image" in reasons["fake.jpg"]
    assert (res.embeddings[~res.ok] == 0).all()


def test_to_rgb_sixteen_bit_keeps_range(tmp_path):
    img = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert to_rgb(img).getpixel((1, 0)) == (255, 255, 255)
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white


def test_decode_resizes_to_square(tmp_path, lite0):
    p = make_image(tmp_path / "wide.png", (1, 2, 3), size=40)
    Image.open(p).resize((80, 40)).save(p)
    arr = decode(str(p), lite0.preprocessing)
    assert arr.shape == (3, 224, 224) and arr.dtype == np.uint8


def test_cache_resumes_after_interruption(class_tree, lite0, tmp_path, monkeypatch):
    paths = sorted(str(p) for p in class_tree.rglob("*.png"))
    cache_dir = tmp_path / "c"
    calls = {"n": 0}
    real_forward = lite0.forward

    def failing_forward(x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_forward(x)

    monkeypatch.setattr(lite0, "flip_tta", False)  # one forward call per batch
    monkeypatch.setattr(lite0, "forward", failing_forward)
    with pytest.raises(KeyboardInterrupt):
        embed_images(paths, model=lite0, device="cpu", cache_dir=cache_dir, batch_size=2,
                     shard_size=2, progress=False, num_workers=0)
    monkeypatch.setattr(lite0, "forward", real_forward)
    res = embed_images(paths, model=lite0, device="cpu", cache_dir=cache_dir, batch_size=2,
                       progress=False, num_workers=0)
    assert res.info["n_cached"] == 4 and res.info["n_embedded"] == 8
    fresh = embed_images(paths, model=lite0, device="cpu", use_cache=False, progress=False,
                         num_workers=0)
    np.testing.assert_allclose(res.embeddings, fresh.embeddings, atol=1e-5)
    # a changed file is embedded again, the rest comes from the cache
    time.sleep(0.01)
    make_image(class_tree / "red" / "red_0.png", (0, 0, 0))
    again = embed_images(paths, model=lite0, device="cpu", cache_dir=cache_dir,
                         progress=False, num_workers=0)
    assert again.info["n_cached"] == 11 and again.info["n_embedded"] == 1


KILL_SCRIPT = """
import sys
from dqaudit.embed import embed_images
paths = sys.argv[2:]
res = embed_images(paths, model="lite0", device="cpu", cache_dir=sys.argv[1], batch_size=2,
                   shard_size=2, progress=False, num_workers=0)
print(res.info["n_cached"], res.info["n_embedded"])
"""


def test_killed_process_resumes_from_cache(tmp_path):
    paths = [str(make_image(tmp_path / "k" / f"{i % 2}" / f"{i}.png", (i * 9, 50, 90), seed=i))
             for i in range(40)]
    cache_dir = tmp_path / "kc"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(cache_dir), *paths])
    deadline = time.time() + 120
    while time.time() < deadline:
        if len(list(cache_dir.glob("*/shard-*.npz"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = list(cache_dir.glob("*/shard-*.npz"))
    assert len(shards) >= 2
    out = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(cache_dir), *paths],
                         capture_output=True, text=True, check=True).stdout.split()
    n_cached, n_embedded = int(out[0]), int(out[1])
    assert n_cached >= 4 and n_cached + n_embedded == 40


def test_partial_shard_is_never_loaded(tmp_path):
    cache = EmbeddingCache(tmp_path, "k")
    cache.write(["a" * 40], np.ones((1, 3), np.float32), np.zeros((1, 9)))
    (cache.dir / "shard-broken.npz.tmp").write_bytes(b"PK\x03\x04 half written")
    (cache.dir / "shard-bad.npz").write_bytes(b"garbage")
    found = cache.load(["a" * 40, "b" * 40])
    assert list(found) == ["a" * 40]


def test_unknown_model_lists_valid_names():
    with pytest.raises(DqauditError, match="valid: lite0, lite1, lite2"):
        load_encoder("resnet")


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


def test_openclip_local_checkpoint(tmp_path, class_tree):
    import open_clip
    import torch

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "dq-tiny-vit.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model("dq-tiny-vit")
    ckpt = tmp_path / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)

    enc = load_encoder(f"openclip:dq-tiny-vit/{ckpt}")
    assert enc.dim == 32 and enc.preprocessing.image_size == 32
    paths = sorted(str(p) for p in class_tree.rglob("*.png"))
    res = embed_images(paths, model=enc, device="cpu", use_cache=False, progress=False,
                       num_workers=0)
    np.testing.assert_allclose(np.linalg.norm(res.embeddings, axis=1), 1.0, atol=1e-5)
    # the loaded weights are the saved ones: same features as the model we saved
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(enc.forward(x).numpy(), model.eval().encode_image(x).numpy(),
                                   atol=1e-5)
    with pytest.raises(DqauditError, match="local checkpoint"):
        load_encoder("openclip:dq-tiny-vit/no-such-tag")


def test_a_photo_decodes_at_the_size_the_encoder_needs(tmp_path, monkeypatch):
    """A 12-MP JPEG is decoded in the DCT domain at a fraction of its size (PIL draft), other
    formats box-reduced first; the model input stays within a few grey levels of a full decode,
    and the image checks still see the file's own size."""
    from dqaudit.embed.encoders import Preprocessing
    from dqaudit.embed.loader import decode

    yy, xx = np.mgrid[0:1800, 0:2400]
    arr = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    arr = np.asarray(Image.fromarray(arr).resize((240, 180)).resize((2400, 1800)))
    prep = Preprocessing(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    from PIL import JpegImagePlugin

    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, *a: drafts.append(a) or real_draft(self, *a))
    for name in ("photo.jpg", "photo.png"):
        Image.fromarray(arr).save(tmp_path / name, quality=95)
        fast, stats = decode(str(tmp_path / name), prep, stats=True)
        with Image.open(tmp_path / name) as im:
            full = im.convert("RGB").resize((299, 224), Image.Resampling.BICUBIC).crop(
                (37, 0, 261, 224))
        full = np.asarray(full, dtype=np.float64).transpose(2, 0, 1)
        assert fast.shape == (3, 224, 224)
        assert np.abs(fast - full).mean() < 4, name
        assert tuple(stats[:2]) == (2400, 1800)
    assert len(drafts) == 1 and min(drafts[0][1]) >= 448  # at least twice the input side


def test_the_openvino_backend_gives_torchs_embeddings(tmp_path):
    pytest.importorskip("openvino")
    from dqaudit.embed import encode_batch
    from dqaudit.embed.backends import resolve_backend, with_backend

    torch_encoder = load_encoder("lite0", image_size=96)
    fast = with_backend(torch_encoder, "openvino", cache_dir=tmp_path, required=True)
    batch = np.random.default_rng(0).integers(0, 256, (5, 3, 96, 96), dtype=np.uint8)
    a, b = encode_batch(torch_encoder, batch, "cpu"), encode_batch(fast, batch, "cpu")
    assert ((a * b).sum(axis=1) >= 0.9999).all()
    assert fast.cache_key() != torch_encoder.cache_key()  # cached apart from torch's
    assert list((tmp_path / "openvino").glob("*.xml"))  # converted once, kept on disk
    assert resolve_backend("auto", "cpu", model="lite0+lite2") == "openvino"
    assert resolve_backend("auto", "cuda", model="lite0") == "torch"
    assert resolve_backend("auto", "cpu", model="openclip:ViT-B-32/x") == "torch"
    with pytest.raises(DqauditError, match="runs on the CPU"):
        resolve_backend("openvino", "cuda")


def test_the_bf16_backend_is_close_and_falls_back_to_fp32_without_bf16(tmp_path, monkeypatch,
                                                                       caplog):
    """``openvino-bf16``: close to torch's embeddings (not equal: bf16 keeps 8 bits of
    mantissa), cached apart from fp32's; on a CPU without bf16 it runs fp32 and says so; auto
    never picks it."""
    pytest.importorskip("openvino")
    from dqaudit.embed import backends, encode_batch

    torch_encoder = load_encoder("lite0", image_size=96)
    batch = np.random.default_rng(0).integers(0, 256, (5, 3, 96, 96), dtype=np.uint8)
    a = encode_batch(torch_encoder, batch, "cpu")
    if backends.cpu_has_bf16():
        half = backends.with_backend(torch_encoder, "openvino-bf16", cache_dir=tmp_path)
        assert half.backend == "openvino-bf16"
        assert ((a * encode_batch(half, batch, "cpu")).sum(axis=1) >= 0.99).all()
        assert half.cache_key() != backends.with_backend(
            torch_encoder, "openvino", cache_dir=tmp_path).cache_key()
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="dqaudit"):
        full = backends.with_backend(torch_encoder, "openvino-bf16", cache_dir=tmp_path)
    assert full.backend == "openvino" and "no bf16 support" in caplog.text
    assert ((a * encode_batch(full, batch, "cpu")).sum(axis=1) >= 0.9999).all()
    assert backends.resolve_backend("auto", "cpu", model="lite0") == "openvino"
    with pytest.raises(DqauditError, match="runs on the CPU"):
        backends.resolve_backend("openvino-bf16", "cuda")


def test_timm_model_from_a_local_weights_file(tmp_path, class_tree):
    """``timm:NAME//path``: any timm architecture with a local state dict (its classifier
    ignored); the features are the saved model's pooled pre-logits; wrong names, missing files
    and another architecture's weights are errors that say so."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=7).eval()
    weights = tmp_path / "resnet10t.pth"
    torch.save(model.state_dict(), weights)

    enc = load_encoder(f"timm:resnet10t//{weights}")
    assert enc.dim == model.num_features and enc.preprocessing.image_size == 224
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        np.testing.assert_allclose(enc.forward(x).numpy(), expected.numpy(), atol=1e-5)
    paths = sorted(str(p) for p in class_tree.rglob("*.png"))[:6]
    res = embed_images(paths, model=enc, device="cpu", use_cache=False, progress=False,
                       num_workers=0)
    assert res.ok.all() and res.embeddings.shape == (6, model.num_features)
    # another file, another identity: the embedding cache cannot mix them up
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), other)
    assert load_encoder(f"timm:resnet10t//{other}").cache_key() != enc.cache_key()

    with pytest.raises(DqauditError, match="unknown timm model"):
        load_encoder("timm:no_such_net_9")
    with pytest.raises(DqauditError, match="no weights file"):
        load_encoder(f"timm:resnet10t//{tmp_path / 'missing.pth'}")
    with pytest.raises(DqauditError, match="does not fit"):
        load_encoder(f"timm:resnet18//{weights}")


def test_the_gpu_decoder_path_matches_the_cpu_decoder(tmp_path, lite0):
    """embed.gpu_decode, run on the CPU (torchvision's decode_jpeg takes the same batched call
    there): JPEGs go through the batched decode and the device-side resize, other formats
    through the workers, a file nvjpeg cannot decode falls back to the CPU decoder, and one
    that fails there too is reported with the CPU decoder's reason."""
    import torch

    from dqaudit.embed.gpu_decode import RawJpegDataset, collate_raw, decode_batch
    from dqaudit.embed.loader import ImageFolderDataset, collate
    from dqaudit.imaging.image_checks import STAT_NAMES

    rng = np.random.default_rng(0)
    paths = []
    for k, (w, h) in enumerate([(640, 480), (300, 500), (900, 120), (64, 64)]):
        arr = (rng.random((h, w, 3)) * 60 + np.linspace(0, 180, w)[None, :, None]).astype(
            np.uint8)
        p = tmp_path / f"img{k}.jpg"
        Image.fromarray(arr).save(p, quality=92)
        paths.append(str(p))
    paths.append(str(make_image(tmp_path / "plain.png", (200, 40, 40))))
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (80, 60), (0, 80, 160, 0)).save(cmyk)
    paths.append(str(cmyk))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(open(paths[0], "rb").read()[:300])
    paths.append(str(broken))
    prep = lite0.preprocessing
    todo = list(range(len(paths)))
    gpu_items = collate_raw([RawJpegDataset(paths, todo, prep)[i] for i in todo])
    idx, images, stats, failed = decode_batch(gpu_items, paths, prep, "cpu")
    cpu_idx, cpu_images, cpu_stats, cpu_failed = collate(
        [ImageFolderDataset(paths, todo, prep)[i] for i in todo])
    assert [i for i, _ in failed] == [6] and failed[0][1] == cpu_failed[0][1]
    order = np.argsort(idx)
    assert sorted(idx.tolist()) == cpu_idx.tolist() == [0, 1, 2, 3, 4, 5]
    got = images[torch.as_tensor(order)].float()
    diff = (got - cpu_images.float()).abs().mean(dim=(1, 2, 3))
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 224, 224)
    assert (diff < 6).all(), diff  # resampling detail only (the scenes are identical)
    s = {k: j for j, k in enumerate(STAT_NAMES)}
    for name in ("width", "height"):
        np.testing.assert_array_equal(stats[order][:, s[name]], cpu_stats[:, s[name]])
    np.testing.assert_allclose(stats[order][:, s["lum_mean"]], cpu_stats[:, s["lum_mean"]],
                               atol=3)


def test_embedding_with_the_gpu_decoder_path_keeps_its_own_cache(tmp_path, lite0):
    paths = [str(make_image(tmp_path / f"{k}.jpg", (30 * k, 100, 200), size=48, seed=k))
             for k in range(4)]
    # no worker processes: forking one after the bf16 test's OpenVINO runtime has started
    # later made this process segfault in a subprocess call (tests/test_layers.py)
    cpu = embed_images(paths, model=lite0, cache_dir=tmp_path / "c", progress=False,
                       num_workers=0)
    gpu = embed_images(paths, model=lite0, cache_dir=tmp_path / "c", progress=False,
                       decoder="nvjpeg", num_workers=0)
    assert gpu.info["decoder"] == "nvjpeg" and gpu.info["n_cached"] == 0  # not the CPU's rows
    assert (np.sum(cpu.embeddings * gpu.embeddings, axis=1) > 0.98).all()
    again = embed_images(paths, model=lite0, cache_dir=tmp_path / "c", progress=False,
                         decoder="nvjpeg", num_workers=0)
    assert again.info["n_cached"] == 4


def test_asking_for_nvjpeg_without_a_gpu_names_the_fix():
    from dqaudit.embed.gpu_decode import resolve_decoder

    assert resolve_decoder("auto", "cpu") == "cpu"
    with pytest.raises(DqauditError, match="--decode cpu"):
        resolve_decoder("nvjpeg", "cpu")
