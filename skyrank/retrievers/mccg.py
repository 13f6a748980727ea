"""MCCG: ConvNeXt-Tiny (Facebook layout) + triplet attention + multiple ClassBlock classifiers.

Paper::

    @article{shen2024mccg,
      title   = {MCCG: A ConvNeXt-Based Multiple-Classifier Method for Cross-View Geo-Localization},
      author  = {Shen, Tianrui and Wei, Yingmei and Kang, Lai and Wan, Shanshan and Yang, Yee-Hong},
      journal = {IEEE Transactions on Circuits and Systems for Video Technology},
      volume  = {34},
      number  = {3},
      pages   = {1456--1468},
      year    = {2024},
      doi     = {10.1109/TCSVT.2023.3296074}
    }

Original code from https://github.com/mode-str/crossview (snapshot 1295ea7842): ``models/ConvNext/make_model.py``
(``build_convnext``, ``TripletAttention``, ``ClassBlock``), ``models/ConvNext/backbones/model_convnext.py`` (Facebook's
ConvNeXt code), ``models/model.py`` (``two_view_net``), ``test.py`` (``extract_feature``) and ``utils.py``
(``save_network``/``load_network``). Weights: **none are published** (README and its whole git history); train one
with ``skyrank retriever train --arch mccg`` or MCCG's own ``train.py``. Licence: the repository carries no licence
file; the backbone code is Meta's ConvNeXt (MIT) and its ImageNet-22k weights are MIT as well. A model trained on
University-1652 or SUES-200 inherits those datasets' non-commercial research terms.

What this module reproduces (facts read from the original repository, no code copied):

- Backbone: ConvNeXt-Tiny (depths 3,3,9,3; dims 96,192,384,768) in Facebook's original layout, state dict keys
  ``downsample_layers.{0..3}``, ``stages.{0..3}.{j}.{dwconv,norm,pwconv1,pwconv2,gamma}``, ``norm``, ``head``. The
  1000-way ``head`` is never used but is part of every checkpoint. Its forward returns both the LayerNorm of the
  global-average-pooled last map (768-d) and the last map itself. MCCG always builds ConvNeXt-*Tiny*, whatever the
  ``model:`` field of its ``opts.yaml`` says (the training default is ``convnext_small_22k_224``, a trap).
- Head: ``classifier1`` (ClassBlock on the global 768-d feature), ``tri_layer`` (triplet attention: two gates ``cw``
  and ``hc``, each ZPool (channel max, channel mean) → 7x7 conv (no bias) → BatchNorm2d (momentum 0.01) → sigmoid,
  applied to the map permuted to (B,H,C,W) and (B,W,H,C)), and ``classifier_mcb{1..block}`` (ClassBlocks on the
  global average of each attended map). ``block`` is 2 (``train.py`` default); 1 also works, more than 2 crashes in
  the original because triplet attention yields two maps. A ClassBlock is Linear(768→512), BatchNorm1d, Dropout(0.5),
  then Linear(512→nclasses); at test time the classifier is skipped and the 512-d post-BN bottleneck is returned.
- Eval output ``(B, 512, block + 1)`` = [mcb1, mcb2, global].
- Test feature (``test.py:extract_feature``): the sum of the outputs for the image and its horizontal flip; each of
  the ``block + 1`` 512-d columns divided by its L2 norm times ``sqrt(block + 1)``; then ``view(B, -1)``, which
  interleaves the columns channel-major (index ``c * (block + 1) + k``). With block 2 that is 1536-d with unit norm.
- Preprocessing: PIL ``Resize((h, w), bicubic)`` (PIL's own antialiased resampling, reproduced exactly here), then
  ``ToTensor`` and ImageNet mean/std. ``h``/``w`` come from ``opts.yaml`` (default 256).
- Checkpoint: ``model/<name>/net_XXX.pth`` = ``two_view_net.state_dict()``: 221 keys ``model_1.convnext.*``,
  ``model_1.classifier1.*``, ``model_1.tri_layer.{cw,hc}.conv.{conv,bn}.*``, ``model_1.classifier_mcb{1,2}.*``. Both
  views share ``model_1``. :func:`checkpoint_filter_fn` keeps the ``model_1.`` keys and strips that prefix; loading
  is strict.

Training: :meth:`MCCGModel.forward_descriptor` gives the differentiable, L2-normalised descriptor (no flip) in train
mode, for Sample4Geo's InfoNCE recipe; :meth:`MCCGModel.forward_logits` gives the per-classifier logits of MCCG's own
cross-entropy recipe. Save with :func:`official_state_dict` so that the file loads like an official one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
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

MCCG_CITATION = """@article{shen2024mccg,
  title   = {MCCG: A ConvNeXt-Based Multiple-Classifier Method for Cross-View Geo-Localization},
  author  = {Shen, Tianrui and Wei, Yingmei and Kang, Lai and Wan, Shanshan and Yang, Yee-Hong},
  journal = {IEEE Transactions on Circuits and Systems for Video Technology},
  volume  = {34},
  number  = {3},
  pages   = {1456--1468},
  year    = {2024},
  doi     = {10.1109/TCSVT.2023.3296074}
}"""

MCCG_CFG = RetrieverCfg(
    name="mccg",
    image_size=256,
    interpolation="bicubic",
    embed_dim=1536,
    flip_sum=True,
    paper=(
        "Shen et al., MCCG: A ConvNeXt-based Multiple-Classifier Method for Cross-view Geo-localization, "
        "IEEE TCSVT 2023"
    ),
    citation=MCCG_CITATION,
    origin_url="https://github.com/mode-str/crossview",
    weights_url="",  # none published
    weights_license=(
        "no weights published; code has no licence file (ConvNeXt backbone: MIT); models trained on "
        "University-1652/SUES-200 inherit their non-commercial research terms"
    ),
)

#: ConvNeXt-Tiny, the only backbone MCCG's ``build_convnext`` builds.
CONVNEXT_TINY_DEPTHS = (3, 3, 9, 3)
CONVNEXT_TINY_DIMS = (96, 192, 384, 768)
DEFAULT_NCLASSES = 701  # University-1652 training locations
OFFICIAL_PREFIX = "model_1."



# --------------------------------------------------------------------------------------------------- backbone
class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of an NCHW map, computed as Facebook's ConvNeXt does (biased variance, eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """depthwise 7x7 → LayerNorm (channels last) → Linear ×4 → GELU → Linear → layer scale ``gamma`` → residual."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))
        if drop_path > 0:
            from timm.layers import DropPath

            self.drop_path: nn.Module = DropPath(drop_path)
        else:
            self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # NCHW -> NHWC
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class ConvNeXtFB(nn.Module):
    """ConvNeXt in Facebook's original parameter layout (not timm's ``stem``/``mlp.fc1`` names).

    ``forward`` returns ``(LayerNorm(GAP(map)), map)``: the global feature and the last feature map.
    """

    def __init__(
        self,
        depths: tuple[int, ...] = CONVNEXT_TINY_DEPTHS,
        dims: tuple[int, ...] = CONVNEXT_TINY_DIMS,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0]))]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)
                )
            )
        rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        start = 0
        for depth, dim in zip(depths, dims, strict=True):
            self.stages.append(nn.Sequential(*[ConvNeXtBlock(dim, rates[start + j]) for j in range(depth)]))
            start += depth
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)  # ImageNet head: unused, kept for the checkpoint layout
        self.num_features = dims[-1]
        self.apply(_init_convnext)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return self.norm(x.mean((-2, -1))), x


def _init_convnext(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------- head
class ConvBN(nn.Module):
    """``conv`` (no bias) then ``bn`` (MCCG's ``BasicConv`` with ``relu=False``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class AttentionGate(nn.Module):
    """x · sigmoid(BN(conv7x7([max_c x, mean_c x]))), the channel statistics taken over dim 1."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = ConvBN(2, 1, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(z))


class TripletAttention(nn.Module):
    """MCCG's two-branch triplet attention: gate ``cw`` on (B,H,C,W) and gate ``hc`` on (B,W,H,C).

    Returns the two attended maps, permuted back to (B,C,H,W).
    """

    def __init__(self) -> None:
        super().__init__()
        self.cw = AttentionGate()
        self.hc = AttentionGate()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.cw(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3)
        b = self.hc(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1)
        return a, b


class ClassBlock(nn.Module):
    """``add_block`` = Linear(in→512), BatchNorm1d(512), Dropout; ``classifier`` = Linear(512→nclasses).

    ``forward`` returns the 512-d bottleneck (``add_block`` only; the original skips the classifier in eval mode);
    :meth:`logits` applies the classifier.
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
        nn.init.ones_(self.add_block[1].weight)
        nn.init.zeros_(self.add_block[1].bias)
        nn.init.normal_(self.classifier[0].weight, std=0.001)
        nn.init.zeros_(self.classifier[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_block(x)

    def logits(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.classifier(bottleneck)


class MCCGModel(nn.Module):
    """MCCG's ``build_convnext`` (ConvNeXt-Tiny branch); state dict = the official ``model_1.*`` minus the prefix.

    ``forward(x)`` returns the bottlenecks ``(B, 512, block + 1)`` = [mcb1, ..., mcb_block, global] in train and
    eval mode alike (dropout is active in train mode, as in MCCG's ``return_f`` features).
    """

    def __init__(self, nclasses: int = DEFAULT_NCLASSES, block: int = 2, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if block not in (1, 2):
            raise ValueError(f"MCCG supports block 1 or 2 (triplet attention yields two maps), got {block}")
        self.block = block
        self.nclasses = nclasses
        self.convnext = ConvNeXtFB(drop_path_rate=drop_path_rate)
        dim = self.convnext.num_features
        self.classifier1 = ClassBlock(dim, nclasses, 0.5)
        self.tri_layer = TripletAttention()
        for i in range(block):
            setattr(self, f"classifier_mcb{i + 1}", ClassBlock(dim, nclasses, 0.5))

    @property
    def num_parts(self) -> int:
        return self.block + 1

    @property
    def embed_dim(self) -> int:
        return 512 * self.num_parts

    def _heads(self) -> list[ClassBlock]:
        return [getattr(self, f"classifier_mcb{i + 1}") for i in range(self.block)] + [self.classifier1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global_feat, fmap = self.convnext(x)
        attended = self.tri_layer(fmap)
        parts = [attended[i].mean((-2, -1)) for i in range(self.block)] + [global_feat]
        return torch.stack([head(p) for head, p in zip(self._heads(), parts, strict=True)], dim=2)

    def forward_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-classifier logits ``[mcb1, ..., global]`` (MCCG's cross-entropy recipe)."""
        feats = self.forward(x)
        return [head.logits(feats[:, :, i]) for i, head in enumerate(self._heads())]

    def forward_descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable retrieval descriptor without flip: per-part L2 / sqrt(parts), flattened; unit norm."""
        return normalize_parts(self.forward(x))


# --------------------------------------------------------------------------------------------------- opts / ckpt
@dataclasses.dataclass(frozen=True)
class MCCGOpts:
    """The fields of MCCG's ``opts.yaml`` that shape the model and its input."""

    h: int = 256
    w: int = 256
    block: int = 2
    nclasses: int | None = None


def read_opts(path: str | Path) -> MCCGOpts:
    """Parse MCCG's ``opts.yaml`` (``yaml.safe_load``): ``h``, ``w``, ``block``, ``nclasses``.

    The ``model:`` field is ignored on purpose: MCCG's ``build_convnext`` always builds ConvNeXt-Tiny, while
    ``train.py`` writes its unused ``--model`` default (``convnext_small_22k_224``) there. ``resnet: true`` (MCCG's
    ResNet-101 variant) is refused.
    """
    cfg = OptsFile(path)
    if cfg.get("resnet"):
        raise CheckpointMismatchError(
            f"{path} has resnet: true (MCCG's ResNet-101 variant); only the ConvNeXt-Tiny MCCG is supported"
        )
    h = cfg.number("h", 256)
    return MCCGOpts(h=h, w=cfg.number("w", h), block=cfg.number("block", 2), nclasses=cfg.number("nclasses", None))


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an MCCG checkpoint onto :class:`MCCGModel`'s keys.

    - ``module.`` prefixes (DataParallel, before or after ``model_1.``) are removed.
    - Official files (``two_view_net`` / ``three_view_net`` state dicts): only the ``model_1.*`` keys are kept (the
      branch shared by drone and satellite; ``three_view_net``'s ``model_2`` is the street branch) and the prefix is
      stripped.
    - A state dict of :class:`MCCGModel` itself (no ``model_1.`` key) passes through.
    """
    sd = strip_prefix(state_dict, "module.")
    if any(k.startswith(OFFICIAL_PREFIX) for k in sd):
        sd = {k[len(OFFICIAL_PREFIX) :]: v for k, v in sd.items() if k.startswith(OFFICIAL_PREFIX)}
        sd = strip_prefix(sd, "module.")
    return sd


def official_state_dict(model: MCCGModel) -> dict[str, torch.Tensor]:
    """The model's weights in the official ``two_view_net`` layout (``model_1.*``), as MCCG's ``save_network``."""
    return {OFFICIAL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}


def infer_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """``(nclasses, block)`` read from a filtered state dict's shapes and keys (``None`` when absent)."""
    w = state_dict.get("classifier1.classifier.0.weight")
    nclasses = int(w.shape[0]) if w is not None else None
    mcb = {k.split(".")[0] for k in state_dict if k.startswith("classifier_mcb")}
    return nclasses, (len(mcb) or None)


# --------------------------------------------------------------------------------------------------- retriever
class MCCGRetriever(PartRetriever):
    """MCCG as a SkyRank retriever: one ``model_1`` for both views, flip-sum, per-part L2 / √P, 1536-d."""

    name = "mccg"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        opts: str | Path | None = None,
        device: str | torch.device = "cpu",
        image_size: int | None = None,
        block: int | None = None,
        nclasses: int | None = None,
        amp: str = "fp32",
    ) -> None:
        check_amp(amp)
        o = read_opts(opts) if opts is not None else MCCGOpts()
        if o.h != o.w:
            raise CheckpointMismatchError(f"{opts}: h={o.h} and w={o.w} differ; SkyRank retrievers take square inputs")
        sd = None
        if checkpoint is not None:
            sd = checkpoint_filter_fn(read_state_dict(checkpoint))
        inferred_n, inferred_block = infer_from_state_dict(sd) if sd is not None else (None, None)
        block = block or (o.block if opts is not None else None) or inferred_block or 2
        nclasses = nclasses or o.nclasses or inferred_n or DEFAULT_NCLASSES
        model = MCCGModel(nclasses=nclasses, block=block)
        if sd is not None:
            load_strict(model, sd, source=f"checkpoint {checkpoint} (mccg, block={block}, nclasses={nclasses})")
        size = int(image_size or o.h)
        cfg = dataclasses.replace(MCCG_CFG, image_size=size, embed_dim=model.embed_dim)
        super().__init__(cfg, device=device, checkpoint=checkpoint)
        self.opts = o
        self.amp = amp
        self.model = model.to(self.device).eval()


def load_checkpoint(model: MCCGModel, checkpoint: str | Path) -> None:
    """read (weights_only / safetensors) → :func:`checkpoint_filter_fn` → strict load."""
    sd = checkpoint_filter_fn(read_state_dict(checkpoint))
    load_strict(model, sd, source=f"checkpoint {checkpoint} (mccg, block={model.block}, nclasses={model.nclasses})")


@register_retriever("mccg", read_opts=read_opts, datasets=PART_DATASETS, refusal=PART_REFUSAL)
def mccg(
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    opts: str | Path | None = None,
    image_size: int | None = None,
    block: int | None = None,
    nclasses: int | None = None,
    amp: str = "fp32",
) -> MCCGRetriever:
    """MCCG (ConvNeXt-Tiny + triplet attention); ``opts`` is MCCG's ``opts.yaml``; random weights if no checkpoint."""
    return MCCGRetriever(
        checkpoint=checkpoint, opts=opts, device=device, image_size=image_size, block=block, nclasses=nclasses, amp=amp
    )


# --------------------------------------------------------------------------------------------------- training
class MCCGTraining(PartTrainingSpec):
    """MCCG's official layout (``net_*.pth`` + ``opts.yaml``); the trainer keeps ``logit_scale`` out of the weights."""

    retriever = "mccg"
    loss_note = " on mccg's part descriptor"

    def resolve(self, arch: str, image_size: int | None) -> tuple[str, int]:
        size = int(image_size or MCCG_CFG.image_size)
        if size % 32 or size < 32:
            raise ValueError(f"MCCG (ConvNeXt) trains on inputs whose side is a multiple of 32; got {size}")
        return "mccg", size

    def check_block(self, block: int) -> int | None:
        if block not in (1, 2):
            raise ValueError(f"MCCG supports block 1 or 2, got {block}")
        return int(block)

    def build(self, arch: str, image_size: int, nclasses: int, block: int) -> nn.Module:
        return MCCGModel(nclasses=nclasses, block=block)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in official_state_dict(model).items()}  # type: ignore[arg-type]

    def load(self, model: nn.Module, checkpoint: str | Path) -> None:
        load_checkpoint(model, checkpoint)  # type: ignore[arg-type]

    def init_from(self, model: nn.Module, checkpoint: str | Path) -> None:
        """An official MCCG checkpoint, or Facebook's bare ConvNeXt-Tiny for the backbone."""
        source = f"init checkpoint {checkpoint} (mccg)"
        sd = checkpoint_filter_fn(read_init_state(checkpoint))
        if any(k.startswith("downsample_layers.") for k in sd):  # Facebook's bare ConvNeXt-Tiny
            module = model.convnext
            sd = keep_own_if_reshaped(sd, module, lambda k: k.startswith("head."))
            load_strict(module, sd, source=source + ", ConvNeXt-Tiny backbone")
            return
        sd = keep_own_if_reshaped(sd, model, lambda k: ".classifier." in k)
        load_strict(model, sd, source=source)

    def opts(self, common: dict, block: int | None) -> dict:
        return {**common, "model": "convnext_tiny", "block": block, "droprate": 0.5, "resnet": False}


register_training_spec(MCCGTraining())
