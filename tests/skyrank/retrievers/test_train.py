"""Retriever training with Sample4Geo's recipe: sampler, loss, checkpoints, resume, and that it learns."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from skyrank.benchmarks import get_benchmark
from skyrank.errors import OutputExistsError, TrainingError
from skyrank.retrievers import create
from skyrank.retrievers.encode import encode_records
from skyrank.retrievers.train import ClassUniqueBatchSampler, lr_at, train_retriever

ARCH = "convnext_atto"


# ------------------------------------------------------------------------------------------ a tiny benchmark
def _scene(rng: random.Random, size: int) -> Image.Image:
    """A random 'satellite' scene: ground colour, roads, buildings, fields."""
    big = int(size * 1.5)
    img = Image.new("RGB", (big, big), tuple(rng.randrange(40, 200) for _ in range(3)))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 2)):  # roads
        a = (rng.randrange(big), 0) if rng.random() < 0.5 else (0, rng.randrange(big))
        b = (rng.randrange(big), big) if a[1] == 0 else (big, rng.randrange(big))
        d.line([a, b], fill=tuple(rng.randrange(60, 120) for _ in range(3)), width=max(2, big // 24))
    for _ in range(rng.randint(4, 8)):  # buildings / fields
        x, y = rng.randrange(big), rng.randrange(big)
        w, h = rng.randrange(big // 10, big // 3), rng.randrange(big // 10, big // 3)
        col = tuple(rng.randrange(256) for _ in range(3))
        (d.rectangle if rng.random() < 0.6 else d.ellipse)([x, y, x + w, y + h], fill=col)
    return img


def _satellite(scene: Image.Image, size: int) -> Image.Image:
    big = scene.width
    o = (big - size) // 2
    return scene.crop((o, o, o + size, o + size))


def _drone(scene: Image.Image, size: int, rng: random.Random) -> Image.Image:
    big = scene.width
    rot = scene.rotate(rng.uniform(0, 360), resample=Image.BILINEAR)
    side = int(size * rng.uniform(0.7, 0.95))
    cx, cy = big // 2 + rng.randint(-size // 10, size // 10), big // 2 + rng.randint(-size // 10, size // 10)
    view = rot.crop((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)).resize((size, size))
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.75, 1.25))
    view = ImageEnhance.Color(view).enhance(rng.uniform(0.7, 1.3))
    return view.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))


def make_tiny_u1652(
    root: Path, n_train: int = 6, n_test: int = 4, views: int = 3, size: int = 48, seed: int = 0
) -> Path:
    """A procedural benchmark in the University-1652 layout (train + test, no distractors)."""
    rng = random.Random(seed)
    for i in range(n_train + n_test):
        label = f"{i:04d}"
        scene = _scene(rng, size)
        sat = _satellite(scene, size)
        drones = [_drone(scene, size, rng) for _ in range(views)]
        if i < n_train:
            folders = {"drone": "train/drone", "satellite": "train/satellite"}
        else:
            folders = {"drone": "test/query_drone", "satellite": "test/gallery_satellite"}
        extra = {"drone": "test/gallery_drone", "satellite": "test/query_satellite"} if i >= n_train else {}
        for view, images in (("drone", drones), ("satellite", [sat])):
            for folder in [folders[view]] + ([extra[view]] if view in extra else []):
                out = root / folder / label
                out.mkdir(parents=True, exist_ok=True)
                for k, im in enumerate(images):
                    name = f"image-{k + 1:02d}.jpeg" if view == "drone" else f"{label}.jpg"
                    im.save(out / name, quality=92)
    return root


def evaluate_r1(root: Path, checkpoint: Path | None, image_size: int, split: str = "test") -> float:
    """Drone→satellite Recall@1 (percent) of a ``sample4geo``-layout convnext_atto on the tiny benchmark."""
    torch.manual_seed(0)
    untrained = checkpoint is None
    r = create("sample4geo", checkpoint=checkpoint, arch=ARCH, image_size=image_size, random_weights=untrained)
    rs = get_benchmark("university1652").load_split(root, split, "d2s")
    q = encode_records(r, root, rs.queries, "drone", batch_size=64, progress=False)
    g = encode_records(r, root, rs.gallery, "satellite", batch_size=64, progress=False)
    best = (q.embeddings @ g.embeddings.T).argmax(1)
    q_lab = np.array([x.label for x in rs.queries])
    g_lab = np.array([x.label for x in rs.gallery])
    return float(100.0 * (g_lab[best] == q_lab).mean())


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine 2 threads were ~6x slower than 1 for these tiny steps."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_u1652(tmp_path_factory.mktemp("u1652") / "University-Release")


# ------------------------------------------------------------------------------------------ pieces
def test_sampler_batches_have_distinct_classes_and_use_every_pair_once() -> None:
    labels = [c for c in range(10) for _ in range(7)]
    s = ClassUniqueBatchSampler(labels, batch_size=4, seed=0)
    s.set_epoch(1)
    batches = list(s)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))
    assert all(len({labels[i] for i in b}) == 4 for b in batches)
    assert len(seen) >= len(labels) - 4  # at most a partial batch is dropped
    first = [list(b) for b in batches]
    s.set_epoch(2)
    assert [list(b) for b in s] != first  # reshuffled per epoch
    s.set_epoch(1)
    assert [list(b) for b in s] == first  # deterministic in (seed, epoch)


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    lrs = [lr_at(s, 100, 1e-3, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] < 1e-5


# ------------------------------------------------------------------------------------------ runs
def test_tiny_run_writes_loadable_checkpoints_and_recipe_and_resumes(tiny_root: Path, tmp_path: Path) -> None:
    kw = dict(arch=ARCH, image_size=32, batch_size=4, progress=False)
    out = tmp_path / "run"
    ck = train_retriever("university1652", tiny_root, out, epochs=2, **kw)
    assert ck == out / "weights_end.pth"
    for name in ("weights_e1.pth", "weights_e2.pth", "weights_end.pth", "train_state.pth", "recipe.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["arch"] == ARCH and recipe["image_size"] == 32 and recipe["seed"] == 0
    assert recipe["benchmark"] == "university1652" and recipe["label_smoothing"] == 0.1
    assert [h["epoch"] for h in recipe["history"]] == [1, 2] and all(np.isfinite(h["loss"]) for h in recipe["history"])
    torch.load(out / "train_state.pth", weights_only=True)
    r = create("sample4geo", checkpoint=ck, arch=ARCH, image_size=32)  # strict load of the official layout
    sd = torch.load(ck, weights_only=True)
    assert set(sd) == set(r.model.state_dict()) and "logit_scale" in sd

    # the same run again without resume is refused
    with pytest.raises(OutputExistsError):
        train_retriever("university1652", tiny_root, out, epochs=2, **kw)
    # a different recipe cannot resume it
    with pytest.raises(TrainingError, match="lr"):
        train_retriever("university1652", tiny_root, out, epochs=2, lr=5e-4, resume=True, **kw)

    # interrupted during epoch 2, resumed → the same weights as the uninterrupted run
    import skyrank.retrievers.train as train_mod

    steps = recipe["history"][0]["steps"]
    calls = {"n": 0}
    real_loss = train_mod.symmetric_infonce

    def interrupted(*args, **kwargs):  # the loss helper, wrapped to simulate a crash
        calls["n"] += 1
        if calls["n"] > steps + 1:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    part = tmp_path / "part"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "symmetric_infonce", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train_retriever("university1652", tiny_root, part, epochs=2, **kw)
    assert (part / "weights_e1.pth").is_file() and not (part / "weights_e2.pth").exists()
    resumed = train_retriever("university1652", tiny_root, part, epochs=2, resume=True, **kw)
    a, b = torch.load(ck, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in json.loads((part / "recipe.json").read_text())["history"]] == [1, 2]
    # resuming a finished run just returns its checkpoint
    assert train_retriever("university1652", tiny_root, out, epochs=2, resume=True, **kw) == ck


def test_training_beats_the_untrained_model_on_held_out_locations(tmp_path: Path) -> None:
    root = make_tiny_u1652(tmp_path / "University-Release", n_train=16, n_test=8, views=4, size=48, seed=0)
    before = evaluate_r1(root, None, 32)
    ck = train_retriever(
        "university1652", root, tmp_path / "run", arch=ARCH, image_size=32, epochs=10, batch_size=8, progress=False
    )
    after = evaluate_r1(root, ck, 32)
    # measured: 56.25 → 87.5 (32 held-out drone queries against 8 satellite tiles)
    assert after >= before + 15, (before, after)


# ------------------------------------------------------------------------------------------ mccg, sdpl, SUES-200
RECIPE_KEYS = (
    "loss", "sampler", "arch", "image_size", "benchmark", "altitude", "epochs_done", "epochs", "steps_per_epoch",
    "batch_size", "lr", "seed", "retriever",
)  # fmt: skip


def _synthetic(out: Path, **kw) -> Path:
    from skyrank.benchmarks.synthetic import generate_synthetic

    return generate_synthetic(out, distractors=0, image_size=64, progress=False, **kw)


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training locations x 1 drone view (University-1652 layout): 2 steps of 2 pairs per epoch."""
    return _synthetic(tmp_path_factory.mktemp("syn") / "synthetic", locations=4, test_locations=1, views=1)


def test_mccg_run_loads_strictly_like_an_official_checkpoint_and_resumes(syn_root: Path, tmp_path: Path) -> None:
    import skyrank.retrievers.train as train_mod
    from skyrank.retrievers.mccg import official_state_dict

    kw = dict(arch="mccg", image_size=64, batch_size=2, progress=False)
    out = tmp_path / "mccg"
    ck = train_retriever("synthetic", syn_root, out, epochs=2, **kw)
    assert ck == out / "net_end.pth"
    for name in ("net_e1.pth", "net_e2.pth", "net_end.pth", "opts.yaml", "train_state.pth", "recipe.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("weights_*")) and not list(out.glob("*.tmp"))
    recipe = json.loads((out / "recipe.json").read_text())
    assert all(k in recipe for k in RECIPE_KEYS)
    assert recipe["retriever"] == "mccg" and recipe["arch"] == "mccg" and recipe["image_size"] == 64
    assert recipe["nclasses"] == 4 and recipe["block"] == 2 and "classifiers" in recipe["heads"]
    assert recipe["epochs_done"] == 2 and recipe["steps_per_epoch"] == 2
    state = torch.load(out / "train_state.pth", weights_only=True)
    assert state["logit_scale"].shape == ()
    sd = torch.load(ck, weights_only=True)
    assert all(k.startswith("model_1.") for k in sd) and not any("logit_scale" in k for k in sd)

    r = create("mccg", checkpoint=ck, opts=out / "opts.yaml")  # strict load; size and heads from opts.yaml
    assert r.image_size == 64 and r.embed_dim == 1536 and r.model.nclasses == 4
    assert set(official_state_dict(r.model)) == set(sd)
    assert all(torch.equal(official_state_dict(r.model)[k], sd[k]) for k in sd)
    create("mccg", checkpoint=out / "net_e1.pth", opts=out / "opts.yaml")  # every epoch's file loads too

    # interrupted during epoch 2, resumed → the same weights (the trainer's logit_scale comes from train_state.pth)
    calls = {"n": 0}
    real_loss = train_mod.symmetric_infonce

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > recipe["steps_per_epoch"] + 1:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    part = tmp_path / "part"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "symmetric_infonce", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train_retriever("synthetic", syn_root, part, epochs=2, **kw)
    assert (part / "net_e1.pth").is_file() and not (part / "net_e2.pth").exists()
    with pytest.raises(TrainingError, match="retriever"):
        train_retriever("synthetic", syn_root, part, epochs=2, resume=True, arch="sdpl", batch_size=2, progress=False)
    resumed = train_retriever("synthetic", syn_root, part, epochs=2, resume=True, **kw)
    b = torch.load(resumed, weights_only=True)
    assert set(b) == set(sd) and all(torch.equal(sd[k], b[k]) for k in sd)
    assert json.loads((part / "recipe.json").read_text())["history"][-1]["logit_scale"] == pytest.approx(
        recipe["history"][-1]["logit_scale"]
    )


def test_sdpl_run_loads_strictly_like_an_official_checkpoint(tmp_path: Path) -> None:
    root = _synthetic(tmp_path / "synthetic", locations=2, test_locations=1, views=1)  # 1 step of 2 pairs
    out = tmp_path / "sdpl"
    ck = train_retriever("synthetic", root, out, arch="sdpl", image_size=256, epochs=1, batch_size=2, progress=False)
    assert ck == out / "net_end.pth" and (out / "net_e1.pth").is_file()
    recipe = json.loads((out / "recipe.json").read_text())
    assert all(k in recipe for k in RECIPE_KEYS)
    assert recipe["retriever"] == "sdpl" and recipe["image_size"] == 256 and recipe["nclasses"] == 2
    sd = torch.load(ck, weights_only=True)
    assert any(k.startswith("model_2.") for k in sd)  # the official layout's duplicated shared backbone
    r = create("sdpl", checkpoint=ck, opts=out / "opts.yaml")
    assert r.image_size == 256 and r.embed_dim == 5120 and r.model.nclasses == 2
    assert np.isfinite(recipe["history"][0]["loss"])


def test_sues200_per_altitude_training_smoke(tmp_path: Path) -> None:
    from skyrank.build import _recipe_summary

    root = _synthetic(
        tmp_path / "sues", layout="sues200-split", locations=4, test_locations=2, views=2, altitudes=(150, 200)
    )
    out = tmp_path / "run150"
    ck = train_retriever(
        "sues200", root, out, altitude=150, arch=ARCH, image_size=32, epochs=1, batch_size=4, progress=False
    )
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["benchmark"] == "sues200" and recipe["altitude"] == "150" and recipe["retriever"] == "sample4geo"
    assert recipe["pairs"] == 8 and recipe["classes"] == 4  # 4 locations x 2 views at 150 m only
    create("sample4geo", checkpoint=ck, arch=ARCH, image_size=32)
    assert "(150 m)" in _recipe_summary(ck)


def test_arch_defaults_and_image_size_checks() -> None:
    from skyrank.retrievers.train import resolve_arch

    assert resolve_arch("sample4geo", None) == ("sample4geo", "convnext_base.fb_in22k_ft_in1k_384", 384)
    assert resolve_arch(ARCH, None) == ("sample4geo", ARCH, 128)
    assert resolve_arch("mccg", None) == ("mccg", "mccg", 256)
    assert resolve_arch("sdpl", None) == ("sdpl", "sdpl", 512)
    assert resolve_arch("sdpl", 384)[2] == 384
    with pytest.raises(ValueError, match="multiple of 32"):
        resolve_arch("mccg", 100)
    with pytest.raises(ValueError, match="256, 384, 512"):
        resolve_arch("sdpl", 128)


def test_init_from_a_bare_backbone_or_another_class_count(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    from skyrank.retrievers.mccg import ConvNeXtFB, MCCGModel, official_state_dict
    from skyrank.retrievers.train import _Target

    fb = ConvNeXtFB(num_classes=21841)  # Facebook's 22k checkpoint: {"model": {...}} with a 21841-way head
    torch.save({"model": fb.state_dict()}, tmp_path / "convnext_tiny_22k.pth")
    t = _Target("mccg", "mccg", 64, nclasses=3, block=2)
    t.init_from(tmp_path / "convnext_tiny_22k.pth")
    own = t.model.convnext.state_dict()
    assert all(torch.equal(own[k], v) for k, v in fb.state_dict().items() if not k.startswith("head."))

    other = MCCGModel(nclasses=7)  # an MCCG run on other data: everything but the classifiers carries over
    torch.save(official_state_dict(other), tmp_path / "net_199.pth")
    t.init_from(tmp_path / "net_199.pth")
    mine = t.model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in other.state_dict().items() if ".classifier." not in k)
    assert mine["classifier1.classifier.0.weight"].shape == (3, 512)

    tv = resnet50(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet50.pth")
    s = _Target("sdpl", "sdpl", 256, nclasses=3, block=2)
    s.init_from(tmp_path / "resnet50.pth")
    assert torch.equal(s.model.model_1.model.conv1.weight, tv.conv1.weight)


def test_training_specs_are_registered_beside_the_factories(monkeypatch) -> None:
    """train.py finds every architecture through the registry (issue 11): a new retriever registers its spec."""
    import skyrank.retrievers._training as training
    from skyrank.retrievers.mccg import MCCGTraining
    from skyrank.retrievers.sample4geo import Sample4GeoTraining
    from skyrank.retrievers.train import _Target, resolve_arch

    assert training.list_trainable() == ["mccg", "sample4geo", "sdpl"]
    assert isinstance(training.training_spec("mccg"), MCCGTraining)
    assert isinstance(training.training_spec("convnext_atto"), Sample4GeoTraining)  # timm names: Sample4Geo's layout

    class TinySpec(training.TrainingSpec):
        retriever = "tiny"
        external_scale = True
        classifier_heads = False

        def resolve(self, arch, image_size):
            return "tiny", int(image_size or 32)

        def build(self, arch, image_size, nclasses, block):
            return torch.nn.Linear(4, 2)

    monkeypatch.setattr(training, "_SPECS", dict(training._SPECS))
    training.register_training_spec(TinySpec())
    assert resolve_arch("tiny", None) == ("tiny", "tiny", 32)
    target = _Target("tiny", "tiny", 32, nclasses=5, block=2)
    assert target.prefix == "net" and target.nclasses is None and target.heads_note() is None
    assert len(target.parameters()) == 3  # weight, bias and the trainer's logit_scale
    with pytest.raises(ValueError, match="already registered"):
        training.register_training_spec(TinySpec())


def test_accelerator_precision_state_is_per_run() -> None:
    """Retriever training takes accelerate's precision for its run and leaves none behind for a SkyLink run."""
    from accelerate import Accelerator

    from skyrank.retrievers.train import make_accelerator, release_accelerator

    Accelerator(mixed_precision="bf16", cpu=True)  # e.g. a SkyLink run earlier in the process
    acc = make_accelerator("fp32", cpu=True)
    assert acc.mixed_precision == "no" and acc.scaler is None
    release_accelerator()
    assert Accelerator(mixed_precision="bf16", cpu=True).mixed_precision == "bf16"  # no "already initialized"
    release_accelerator()
