"""SDPL: ResNet-50 (stride-1 last stage) with shifting-dense partition pooling and ten ClassBlocks.

Paper::

    @article{chen2024sdpl,
      title   = {SDPL: Shifting-Dense Partition Learning for UAV-View Geo-Localization},
      author  = {Chen, Quan and Wang, Tingyu and Yang, Zihao and Li, Haoran and Lu, Rongfeng and Sun, Yaoqi and
                 Zheng, Bolun and Yan, Chenggang},
      journal = {IEEE Transactions on Circuits and Systems for Video Technology},
      year    = {2024},
      note    = {IEEE Xplore document 10587023; arXiv:2403.04172}
    }

Original code from https://github.com/C-water/SDPL_release (snapshot 0a179a2774): ``model_LPN_Gem_denseLPN.py``
(``ft_net_resnet_dense_lpn_shift3_new1``, ``GeM``, ``ClassBlock``, ``two_view_net``), ``test_new.py``
(``extract_feature``), ``utils.py`` (``load_network``) and ``model/pretrained/opts.yaml``. Weights: ``net_350.pth``
(University-1652), Google Drive file ``1l2Dh7BtwafSZ9abPWuJ9maov2cCYUS8U`` or Baidu (pwd ``e38c``), to be placed next
to the repository's ``model/pretrained/opts.yaml``. Licence: the repository carries no licence file and the weights
are released without one; they are fine-tuned from torchvision's ImageNet ResNet-50 (BSD-3-Clause) on
University-1652, whose terms allow non-commercial research use only.

What this module reproduces (facts read from the original repository, no code copied):

- Backbone: torchvision ``resnet50`` (its unused ``fc`` included), with ``layer4[0].conv2`` and
  ``layer4[0].downsample[0]`` set to stride 1, so a 512x512 input gives a 2048x32x32 map. The original builds it with
  ``pretrained=True``; here ``weights=None`` (nothing is downloaded).
- Shifting-dense partition (``get_part_pool_dense_shift_new3``, always called with block 4): with ``p = floor(H/8)``
  and ``c = H // 2``, for each shift ``s`` in (-2, 0, +2) (applied to rows and columns alike) the map gives ten parts:
  the central 2p square, the rings between the 2p/4p and 4p/6p squares (inner area zeroed by subtracting the
  zero-padded inner square), the outer remainder (the map minus the 6p square), the 4p and 6p squares rebuilt as
  ring + padded inner part, ``outer + centre-padded(ring 4p/6p)``, ``outer + centre-padded(6p square without the 2p
  centre)`` and the outer remainder again. Two quirks of the original are reproduced because the released weights
  were trained with them:

  * the outer remainder *replaces* the working map, so the next shift's parts are cut from a map whose previous
    6p window is already zero (with H = 32 the (0, 0) shift's central parts are entirely zero);
  * the zero-padding that places an inner part back into a larger one is symmetric, so for shifts other than
    (0, 0) the inner part of parts 6 and 8 lands at the unshifted centre.

  Each part is pooled by GeM with p = 3 and eps = 1e-6 over its whole tensor area (zeroed cells count, as
  ``eps**3``). The stored per-channel ``gem{0..9}.p`` parameters never take effect: the original passes the previous
  part into the ``p`` slot of ``GeM.gem`` and so always uses its default ``p = 3``. The three shifted results are
  fused with softmax weights from ``shift_blocks`` (1x1 conv 2048→1024, ReLU, GAP, Linear 1024→512, Dropout,
  Linear 512→512, Dropout, Linear 512→3, softmax) computed on the unmodified map. Output ``(B, 2048, 10)``.
  The partition needs a square feature map with ``H % 8 == 0`` and ``H >= 16`` (inputs of 256, 384, 512, ... px); the
  original crashes or slices out of range otherwise, and this module raises ``ValueError``.
- Heads: ``classifier0..9``, each Linear(2048→512), BatchNorm1d, Dropout(droprate), Linear(512→nclasses); at test time
  ``test_new.py`` removes the last Linear, so the output is ``(B, 512, 10)``. ``model_1.bn`` (BatchNorm1d(2048),
  affine=False) is never used.
- Test feature: sum of the outputs for the image and its horizontal flip, each of the 10 columns divided by its L2
  norm times √10, ``view(B, -1)`` (5120-d, channel-major, parts interleaved).
- Precision: the partition pooling (``pow(3)`` of activations and their mean) and the heads run in float32 even under
  autocast; fp16 overflows to NaN and bf16 moves the features measurably (notes §9).
- Preprocessing: PIL ``Resize((512, 512), bicubic)`` (reproduced exactly), ``ToTensor``, ImageNet mean/std.
- Checkpoint: ``two_view_net.state_dict()`` with ``share_weight=True``: 772 keys, ``model_1.model.*`` (ResNet-50),
  ``model_1.gem{0..9}.p``, ``model_1.bn.*``, ``model_1.shift_blocks.{0,4,6,8}.*``, top-level
  ``classifier{0..9}.{add_block.0,add_block.1,classifier.0}.*``, plus the 341 ``model_1`` keys duplicated under
  ``model_2.*`` (the shared module is registered twice). :func:`checkpoint_filter_fn` drops ``model_2.*`` (after
  checking it equals ``model_1``) and any ``module.`` prefix; loading is strict.

Training: :meth:`SDPLModel.forward_descriptor` gives the differentiable, L2-normalised 5120-d descriptor (no flip)
in train mode, for Sample4Geo's InfoNCE recipe; :meth:`SDPLModel.forward_logits` gives the ten classifier logits of
SDPL's own cross-entropy recipe. Save with :func:`official_state_dict` to get the official layout (with the
``model_2.*`` duplicates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from skyrank.errors import CheckpointMismatchError
from skyrank.retrievers._base import RetrieverCfg, register_retriever
from skyrank.retrievers._checkpoint import load_strict, read_state_dict, strip_prefix
from skyrank.retrievers._parts import (
    PART_DATASETS,
    PART_REFUSAL,
    OptsFile,
    PartRetriever,
    PartTrainingSpec,
    check_amp,
    normalize_parts,
)
from skyrank.retrievers._training import (
    keep_own_if_reshaped,
    read_init_state,
    register_training_spec,
)

SDPL_CITATION = """@article{chen2024sdpl,
  title   = {SDPL: Shifting-Dense Partition Learning for UAV-View Geo-Localization},
  author  = {Chen, Quan and Wang, Tingyu and Yang, Zihao and Li, Haoran and Lu, Rongfeng and Sun, Yaoqi and
             Zheng, Bolun and Yan, Chenggang},
  journal = {IEEE Transactions on Circuits and Systems for Video Technology},
  year    = {2024},
  note    = {IEEE Xplore document 10587023; arXiv:2403.04172}
}"""

SDPL_CFG = RetrieverCfg(
    name="sdpl",
    image_size=512,
    interpolation="bicubic",
    embed_dim=5120,
    flip_sum=True,
    paper="Chen et al., SDPL: Shifting-Dense Partition Learning for UAV-View Geo-Localization, IEEE TCSVT 2024",
    citation=SDPL_CITATION,
    origin_url="https://github.com/C-water/SDPL_release",
    weights_url="https://drive.google.com/file/d/1l2Dh7BtwafSZ9abPWuJ9maov2cCYUS8U/view",
    weights_license=(
        "unspecified (no licence file); ResNet-50 ImageNet init (BSD-3-Clause) fine-tuned on University-1652 "
        "(non-commercial research use)"
    ),
)

NUM_PARTS = 10  # block 4: 4 rings + 6 unions
SHIFTS = (-2, 0, 2)  # feature pixels, rows and columns alike
GEM_P = 3.0  # the p the original actually uses
GEM_EPS = 1e-6
DEFAULT_NCLASSES = 701
DEFAULT_DROPRATE = 0.75
OFFICIAL_PREFIX = "model_1."
DUPLICATE_PREFIX = "model_2."



class GeM(nn.Module):
    """Holds SDPL's per-channel ``p`` (initialised to 3) for the checkpoint layout; pooling always uses p = 3."""

    def __init__(self, dim: int = 2048, p: float = 3.0) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((dim,), p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem_pool(x)


def gem_pool(x: torch.Tensor, p: float = GEM_P, eps: float = GEM_EPS) -> torch.Tensor:
    """``(B, C, h, w)`` → ``(B, C)``: ``mean(clamp(x, eps) ** p) ** (1 / p)`` over the whole ``h × w`` area."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def _window(x: torch.Tensor, c: int, half: int, s: int) -> torch.Tensor:
    """The ``2·half`` square of ``x`` centred on ``(c + s, c + s)``."""
    return x[:, :, c - half + s : c + half + s, c - half + s : c + half + s]


def _grow(t: torch.Tensor, m: int) -> torch.Tensor:
    """Zero-pad ``t`` by ``m`` cells on every side (symmetric, whatever the shift)."""
    return F.pad(t, (m, m, m, m))


def shifting_dense_parts(x: torch.Tensor) -> list[list[torch.Tensor]]:
    """The ten part tensors for each of the three shifts, exactly as SDPL's ``get_part_pool_dense_shift_new3``.

    See the module docstring for the two quirks (the working map is replaced by its outer remainder after each shift;
    inner parts are re-placed at the unshifted centre).
    """
    h, w = x.shape[-2:]
    if h != w or h % 8 or h < 16:
        raise ValueError(
            f"SDPL's shifting-dense partition needs a square feature map with side a multiple of 8 and >= 16, got "
            f"{h}x{w} (input side 256, 384, 512, ... px)"
        )
    p, c = h // 8, h // 2
    out = []
    for s in SHIFTS:
        w1, w2, w3 = (_window(x, c, k * p, s) for k in (1, 2, 3))
        ring2 = w2 - _grow(w1, p)
        ring3 = w3 - _grow(w2, p)
        # put the 6p window back at its own (shifted) place and subtract it: the outer remainder
        before, after = c - 3 * p + s, h - (c + 3 * p + s)
        x = x - F.pad(w3, (before, after, before, after))
        sq2 = ring2 + _grow(w1, p)
        sq3_hollow = ring3 + _grow(ring2, p)
        out.append(
            [
                w1,
                ring2,
                ring3,
                x,
                sq2,
                sq3_hollow,
                x + _grow(ring3, p),
                ring3 + _grow(sq2, p),
                x + _grow(sq3_hollow, p),
                x,
            ]
        )
    return out


class SDPLBackbone(nn.Module):
    """SDPL's ``ft_net_resnet_dense_lpn_shift3_new1`` (``model_1``): ResNet-50 stride 1 → ``(B, 2048, 10)``."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        self.model = net
        self.bn = nn.BatchNorm1d(2048, affine=False)  # unused by the original, kept for the layout
        for i in range(NUM_PARTS):
            setattr(self, f"gem{i}", GeM(2048))
        self.shift_blocks = nn.Sequential(
            nn.Conv2d(2048, 1024, kernel_size=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(),
            nn.Linear(1024, 512),
            nn.Dropout(0.5),
            nn.Linear(512, 512),
            nn.Dropout(0.5),
            nn.Linear(512, 3),
            nn.Softmax(dim=1),
        )

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """Shift-weighted GeM part pooling of a float32 map → ``(B, 2048, 10)``."""
        weights = self.shift_blocks(fmap)  # (B, 3), on the unmodified map
        per_shift = [
            torch.stack([getattr(self, f"gem{k}")(part) for k, part in enumerate(parts)], dim=2)
            for parts in shifting_dense_parts(fmap)
        ]
        return (torch.stack(per_shift, dim=1) * weights[:, :, None, None]).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.forward_map(x)
        with torch.autocast(fmap.device.type, enabled=False):
            return self.pool(fmap.float())


class ClassBlock(nn.Module):
    """``add_block`` = Linear(2048→512), BatchNorm1d(512), Dropout(droprate); ``classifier`` = Linear(512→nclasses).

    ``forward`` returns the bottleneck (SDPL's test-time ClassBlock, whose classifier is replaced by an empty
    ``Sequential``); :meth:`logits` applies the classifier.
    """

    def __init__(self, in_dim: int, nclasses: int, droprate: float, bottleneck: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, bottleneck), nn.BatchNorm1d(bottleneck)]
        if droprate > 0:
            layers.append(nn.Dropout(droprate))
        self.add_block = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(bottleneck, nclasses))
        nn.init.kaiming_normal_(self.add_block[0].weight, a=0, mode="fan_out")
        nn.init.zeros_(self.add_block[0].bias)
        nn.init.normal_(self.add_block[1].weight, 1.0, 0.02)
        nn.init.zeros_(self.add_block[1].bias)
        nn.init.normal_(self.classifier[0].weight, std=0.001)
        nn.init.zeros_(self.classifier[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_block(x)

    def logits(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.classifier(bottleneck)


class SDPLModel(nn.Module):
    """SDPL's shared-weight ``two_view_net`` without the duplicate ``model_2``: ``model_1`` + ``classifier0..9``.

    ``forward(x)`` returns the bottlenecks ``(B, 512, 10)`` in train and eval mode alike; the heads run in float32.
    """

    def __init__(self, nclasses: int = DEFAULT_NCLASSES, droprate: float = DEFAULT_DROPRATE) -> None:
        super().__init__()
        self.nclasses = nclasses
        self.model_1 = SDPLBackbone()
        for i in range(NUM_PARTS):
            setattr(self, f"classifier{i}", ClassBlock(2048, nclasses, droprate))

    @property
    def embed_dim(self) -> int:
        return 512 * NUM_PARTS

    def _heads(self) -> list[ClassBlock]:
        return [getattr(self, f"classifier{i}") for i in range(NUM_PARTS)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.model_1(x)
        with torch.autocast(parts.device.type, enabled=False):
            return torch.stack([head(parts[:, :, i]) for i, head in enumerate(self._heads())], dim=2)

    def forward_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ten classifier logits (SDPL's cross-entropy recipe)."""
        feats = self.forward(x)
        with torch.autocast(feats.device.type, enabled=False):
            return [head.logits(feats[:, :, i]) for i, head in enumerate(self._heads())]

    def forward_descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable retrieval descriptor without flip: per-part L2 / √10, flattened; unit norm."""
        return normalize_parts(self.forward(x))


# --------------------------------------------------------------------------------------------------- opts / ckpt
@dataclasses.dataclass(frozen=True)
class SDPLOpts:
    """The fields of SDPL's ``opts.yaml`` that shape the model and its input."""

    h: int = 512
    w: int = 512
    block: int = 4
    nclasses: int | None = None
    droprate: float = DEFAULT_DROPRATE


def read_opts(path: str | Path) -> SDPLOpts:
    """Parse SDPL's ``opts.yaml`` (``yaml.safe_load``): ``h``, ``w``, ``block``, ``nclasses``, ``droprate``.

    Refuses configurations this module does not implement: ``block`` other than 4 (the original's partition always
    yields ten parts, so other blocks crash there too), ``dense_LPN: false``, ``LPN: true`` or ``resnet: false``.
    ``stride`` and ``pool`` are ignored, as the original's dense-LPN model ignores them (always stride 1, GeM).
    """
    cfg = OptsFile(path)
    problems = []
    if cfg.get("dense_LPN") is False or cfg.get("LPN") is True:
        problems.append("it is not a dense-LPN (SDPL) model (dense_LPN must be true, LPN false)")
    if cfg.get("resnet") is False:
        problems.append("resnet: false (only the ResNet-50 SDPL is supported)")
    block = cfg.number("block", 4)
    if block != 4:
        problems.append(f"block: {block} (SDPL's shifting-dense partition always has block 4, ten parts)")
    if problems:
        raise CheckpointMismatchError(f"{path} describes a model SkyRank's sdpl cannot build: " + "; ".join(problems))
    h = cfg.number("h", 512)
    return SDPLOpts(
        h=h,
        w=cfg.number("w", h),
        block=block,
        nclasses=cfg.number("nclasses", None),
        droprate=cfg.number("droprate", DEFAULT_DROPRATE, float),
    )


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an SDPL checkpoint onto :class:`SDPLModel`'s keys.

    ``module.`` prefixes are removed, then the ``model_2.*`` keys (the shared backbone registered a second time by
    ``two_view_net(share_weight=True)``) are dropped. A ``model_2`` that differs from ``model_1`` (an unshared
    two-branch model) is refused, since one backbone would silently be thrown away.
    """
    sd = strip_prefix(state_dict, "module.")
    dup = {k[len(DUPLICATE_PREFIX) :]: v for k, v in sd.items() if k.startswith(DUPLICATE_PREFIX)}
    differing = [
        k
        for k, v in dup.items()
        if (OFFICIAL_PREFIX + k) in sd
        and (sd[OFFICIAL_PREFIX + k].shape != v.shape or not torch.equal(sd[OFFICIAL_PREFIX + k], v))
    ]
    if differing:
        raise CheckpointMismatchError(
            f"model_2.* differs from model_1.* ({len(differing)} tensors, e.g. {sorted(differing)[:3]}): this is an "
            "unshared two-branch SDPL checkpoint (share: false); only shared-weight SDPL (the released net_350.pth) "
            "is supported"
        )
    return {k: v for k, v in sd.items() if not k.startswith(DUPLICATE_PREFIX)}


def official_state_dict(model: SDPLModel) -> dict[str, torch.Tensor]:
    """The model's weights in the official layout, ``model_2.*`` duplicates included (as SDPL's ``save_network``)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dups = {DUPLICATE_PREFIX + k[len(OFFICIAL_PREFIX) :]: v for k, v in sd.items() if k.startswith(OFFICIAL_PREFIX)}
    return {**sd, **dups}


def infer_nclasses(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    w = state_dict.get("classifier0.classifier.0.weight")
    return int(w.shape[0]) if w is not None else None


def _check_image_size(size: int) -> None:
    side = -(-size // 16)  # conv1, maxpool, layer2, layer3 halve (ceil); layer4 has stride 1
    if side % 8 or side < 16:
        raise ValueError(
            f"SDPL needs an input side giving a feature map side that is a multiple of 8 and >= 16 "
            f"(256, 384, 512, ... px); got {size}"
        )


# --------------------------------------------------------------------------------------------------- retriever
class SDPLRetriever(PartRetriever):
    """SDPL as a SkyRank retriever: one ``model_1`` for both views, flip-sum, per-part L2 / √10, 5120-d."""

    name = "sdpl"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        opts: str | Path | None = None,
        device: str | torch.device = "cpu",
        image_size: int | None = None,
        nclasses: int | None = None,
        amp: str = "fp32",
    ) -> None:
        check_amp(amp)
        o = read_opts(opts) if opts is not None else SDPLOpts()
        if o.h != o.w:
            raise CheckpointMismatchError(f"{opts}: h={o.h} and w={o.w} differ; SkyRank retrievers take square inputs")
        size = int(image_size or o.h)
        _check_image_size(size)
        sd = checkpoint_filter_fn(read_state_dict(checkpoint)) if checkpoint is not None else None
        nclasses = nclasses or o.nclasses or (infer_nclasses(sd) if sd is not None else None) or DEFAULT_NCLASSES
        model = SDPLModel(nclasses=nclasses, droprate=o.droprate)
        if sd is not None:
            load_strict(model, sd, source=f"checkpoint {checkpoint} (sdpl, nclasses={nclasses})")
        cfg = dataclasses.replace(SDPL_CFG, image_size=size, embed_dim=model.embed_dim)
        super().__init__(cfg, device=device, checkpoint=checkpoint)
        self.opts = o
        self.amp = amp
        self.model = model.to(self.device).eval()


def load_checkpoint(model: SDPLModel, checkpoint: str | Path) -> None:
    """read (weights_only / safetensors) → :func:`checkpoint_filter_fn` → strict load."""
    sd = checkpoint_filter_fn(read_state_dict(checkpoint))
    load_strict(model, sd, source=f"checkpoint {checkpoint} (sdpl, nclasses={model.nclasses})")


@register_retriever("sdpl", read_opts=read_opts, datasets=PART_DATASETS, refusal=PART_REFUSAL)
def sdpl(
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    opts: str | Path | None = None,
    image_size: int | None = None,
    nclasses: int | None = None,
    amp: str = "fp32",
) -> SDPLRetriever:
    """SDPL (ResNet-50 + shifting-dense partition); ``opts`` is SDPL's ``opts.yaml``; random weights if none given."""
    return SDPLRetriever(
        checkpoint=checkpoint, opts=opts, device=device, image_size=image_size, nclasses=nclasses, amp=amp
    )


# --------------------------------------------------------------------------------------------------- training
class SDPLTraining(PartTrainingSpec):
    """SDPL's official layout (``net_*.pth`` with the duplicated ``model_2.*`` keys + ``opts.yaml``); the trainer
    keeps ``logit_scale`` out of the weights."""

    retriever = "sdpl"
    loss_note = " on sdpl's part descriptor"

    def resolve(self, arch: str, image_size: int | None) -> tuple[str, int]:
        size = int(image_size or SDPL_CFG.image_size)
        _check_image_size(size)
        return "sdpl", size

    def build(self, arch: str, image_size: int, nclasses: int, block: int) -> nn.Module:
        return SDPLModel(nclasses=nclasses)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in official_state_dict(model).items()}  # type: ignore[arg-type]

    def load(self, model: nn.Module, checkpoint: str | Path) -> None:
        load_checkpoint(model, checkpoint)  # type: ignore[arg-type]

    def init_from(self, model: nn.Module, checkpoint: str | Path) -> None:
        """An official SDPL checkpoint, or torchvision's ResNet-50 for the backbone."""
        source = f"init checkpoint {checkpoint} (sdpl)"
        sd = checkpoint_filter_fn(read_init_state(checkpoint))
        if "conv1.weight" in sd:  # torchvision's ResNet-50
            module = model.model_1.model
            sd = keep_own_if_reshaped(sd, module, lambda k: k.startswith("fc."))
            load_strict(module, sd, source=source + ", ResNet-50 backbone")
            return
        sd = keep_own_if_reshaped(sd, model, lambda k: ".classifier." in k)
        load_strict(model, sd, source=source)

    def opts(self, common: dict, block: int | None) -> dict:
        return {**common, "block": 4, "droprate": DEFAULT_DROPRATE, "resnet": True, "dense_LPN": True, "LPN": False,
                "pool": "gem", "stride": 1}


register_training_spec(SDPLTraining())
