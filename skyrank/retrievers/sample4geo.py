"""Sample4Geo: a timm ConvNeXt shared by both views, trained with symmetric InfoNCE.

Paper::

    @inproceedings{deuser2023sample4geo,
      title     = {Sample4Geo: Hard Negative Sampling For Cross-View Geo-Localisation},
      author    = {Deuser, Fabian and Habel, Konrad and Oswald, Norbert},
      booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
      pages     = {16847--16856},
      year      = {2023}
    }

Original code from https://github.com/Skyy93/Sample4Geo (``sample4geo/model.py``, ``TimmModel``).
Weights: the README's Google Drive folder (``1PMuUqvDnCb216D8_ZDDJzDD3FxeH5BoA``), one file per benchmark, named by
its ``eval_*.py`` script (:data:`RELEASED_WEIGHTS`; the number is the R@1 at save time)::

    pretrained/university/convnext_base.fb_in22k_ft_in1k_384/weights_e1_0.9515.pth     University-1652 (D2S)
    pretrained/vigor_same/convnext_base.fb_in22k_ft_in1k_384/weights_e40_0.7786.pth    VIGOR same-area
    pretrained/vigor_cross/convnext_base.fb_in22k_ft_in1k_384/weights_e40_0.6109.pth   VIGOR cross-area
    pretrained/cvusa/convnext_base.fb_in22k_ft_in1k_384/weights_e40_98.6830.pth        CVUSA
    pretrained/cvact/convnext_base.fb_in22k_ft_in1k_384/weights_e36_90.8149.pth        CVACT (val and test)

Licence: the repository snapshot we read carries no licence file, and the weights are released without an explicit
licence; they are fine-tuned from timm's ImageNet ``convnext_base.fb_in22k_ft_in1k_384`` on University-1652, whose
terms allow non-commercial research use only. Check both before redistributing features or weights.

What this module reproduces (facts from the original repository, no code copied):

- Model: ``timm.create_model(arch, pretrained=False, num_classes=0)`` wrapped so that the state dict is exactly the
  official layout, ``model.*`` plus ``logit_scale`` (initialised to ``log(1/0.07)``). For
  ``convnext_base.fb_in22k_ft_in1k_384`` that is 343 keys and a 1024-d pooled embedding
  (avg-pool + LayerNorm2d head, ``fc`` = Identity). One backbone serves both views.
- Preprocessing, reproduced exactly (:func:`sample4geo_preprocess`; Sample4Geo's ``get_transforms`` val branch in
  ``sample4geo/dataset/university.py``): ``cv2.imread`` (which applies the EXIF orientation) and BGR→RGB, then
  albumentations' ``A.Resize(384, 384, interpolation=cv2.INTER_LINEAR_EXACT)`` — OpenCV's bit-exact bilinear squash,
  no crop and **no antialiasing** when shrinking — then ``A.Normalize`` (ImageNet mean/std, ``max_pixel_value`` 255:
  ``(x - 255 mean) * 1 / (255 std)`` in float32) and ``ToTensorV2`` (HWC → CHW). SkyRank decodes with PIL (one
  decoder and one bad-image contract for every retriever), applies the EXIF orientation as ``cv2.imread`` does, and
  resizes with OpenCV itself (``opencv-python-headless``). Measured (``benchmarks/sample4geo_preprocess.py``,
  BENCHMARKS.md): against the original pipeline's tensors (``cv2.imread`` → ``cv2.resize`` → albumentations'
  normalisation) on JPEG (4:4:4, 4:2:2, 4:2:0) and PNG images of 200-600 px, larger and smaller than 384, the max
  absolute difference is 0 and the embeddings are identical (PIL and OpenCV's libjpeg-turbo decode to the same
  pixels). SkyRank's earlier torchvision antialiased resize differed by up to 27 grey levels on shrunk, textured
  images (1 when enlarging; embedding cosine down to 0.9993 on a randomly initialised ConvNeXt-atto; SkyRank
  issue 14 reports 0.9988 and up to ~50 grey levels on the official weights and University-1652 images).
- Ground views (issue 20; ``eval_vigor_*.py``, ``eval_cvusa.py``, ``eval_cvact.py``): the same resize to
  ``(H, W)`` with W = 2 x 384 = 768 and H = ``int((1024 - 2 * ground_cutting) / 2048 * W)`` = 384 for VIGOR
  (``ground_cutting`` 0), ``round(224 / 1232 * W)`` = 140 for CVUSA and CVACT, where the whole panorama is squeezed
  (no crop of CVACT's central rows, unlike OriCNN/SAFA): :func:`ground_size`, chosen by the benchmark's evaluation
  protocol (``create("sample4geo", dataset="vigor")``; the build passes it). Satellite tiles stay 384 x 384.
  University-1652's street photos are not panoramas and Sample4Geo has no street model: they stay square.
- Features: forward pass (fp16 autocast on CUDA, as Sample4Geo's ``predict``), L2-normalised, returned as float32.
  No flip test-time augmentation.
- Loading: Sample4Geo loads with non-strict ``load_state_dict``, which silently keeps random weights on a mismatch
  (Sample4Geo issue #45). SkyRank loads strictly and names every missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from skyrank.retrievers._base import Retriever, RetrieverCfg, check_view, register_retriever
from skyrank.retrievers._checkpoint import load_strict, read_state_dict, strip_prefix
from skyrank.retrievers._training import TrainingSpec, register_training_spec

DEFAULT_ARCH = "convnext_base.fb_in22k_ft_in1k_384"

SAMPLE4GEO_CITATION = """@inproceedings{deuser2023sample4geo,
  title     = {Sample4Geo: Hard Negative Sampling For Cross-View Geo-Localisation},
  author    = {Deuser, Fabian and Habel, Konrad and Oswald, Norbert},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages     = {16847--16856},
  year      = {2023}
}"""

SAMPLE4GEO_CFG = RetrieverCfg(
    name="sample4geo",
    image_size=384,
    interpolation="bilinear",
    embed_dim=1024,
    flip_sum=False,
    paper="Deuser et al., Sample4Geo: Hard Negative Sampling For Cross-View Geo-Localisation, ICCV 2023",
    citation=SAMPLE4GEO_CITATION,
    origin_url="https://github.com/Skyy93/Sample4Geo",
    weights_url="https://drive.google.com/drive/folders/1PMuUqvDnCb216D8_ZDDJzDD3FxeH5BoA",
    weights_license="unspecified (no licence file); each file is trained on its benchmark (University-1652, VIGOR, "
    "CVUSA or CVACT), whose research-use terms apply",
)

#: Sample4Geo's released checkpoints (README's Google Drive folder), by evaluation protocol / benchmark: the path its
#: ``eval_*.py`` loads and the R@1 (percent) in the file name.
RELEASED_WEIGHTS: dict[str, tuple[str, float]] = {
    "university1652": ("pretrained/university/convnext_base.fb_in22k_ft_in1k_384/weights_e1_0.9515.pth", 95.15),
    "vigor_same": ("pretrained/vigor_same/convnext_base.fb_in22k_ft_in1k_384/weights_e40_0.7786.pth", 77.86),
    "vigor_cross": ("pretrained/vigor_cross/convnext_base.fb_in22k_ft_in1k_384/weights_e40_0.6109.pth", 61.09),
    "cvusa": ("pretrained/cvusa/convnext_base.fb_in22k_ft_in1k_384/weights_e40_98.6830.pth", 98.683),
    "cvact": ("pretrained/cvact/convnext_base.fb_in22k_ft_in1k_384/weights_e36_90.8149.pth", 90.8149),
}

#: VIGOR's ``ground_cutting`` (rows cut from the top and bottom of the 1024-row panorama before resizing): 0.
VIGOR_GROUND_CUTTING = 0
#: The fewest rows a ground input gets: a timm ConvNeXt's total stride (a smaller input cannot pass its last
#: downsampling). Only a CVUSA/CVACT input below ``image_size`` 176 meets it; Sample4Geo's 384 gives 140 rows.
MIN_GROUND_ROWS = 32


def ground_size(dataset: str | None, image_size: int = 384) -> tuple[int, int] | None:
    """Sample4Geo's ground-view input ``(H, W)`` for a benchmark's evaluation protocol, ``None`` where the ground
    view (if any) is resized like the others, to a square.

    W = 2 x ``image_size``; VIGOR: H = ``int((1024 - 2 * ground_cutting) / 2048 * W)`` (384 x 768 at 384), CVUSA
    and CVACT: H = ``round(224 / 1232 * W)`` (140 x 768), the panorama squeezed whole (``eval_*.py``); H is at
    least :data:`MIN_GROUND_ROWS` (small CPU models only).
    """
    width = 2 * int(image_size)
    if dataset == "vigor":
        height = int((1024 - 2 * VIGOR_GROUND_CUTTING) / 2048 * width)
    elif dataset in ("cvusa", "cvact"):
        height = round(224 / 1232 * width)
    else:
        return None
    return max(MIN_GROUND_ROWS, height), width


#: ``logit_scale`` initial value of Sample4Geo's ``TimmModel`` (CLIP's temperature 0.07).
LOGIT_SCALE_INIT = math.log(1 / 0.07)

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - a core dependency
        from skyrank.errors import MissingDependencyError

        raise MissingDependencyError(
            "sample4geo's preprocessing needs OpenCV: pip install opencv-python-headless"
        ) from err
    return cv2


def sample4geo_preprocess(
    image: Image.Image | np.ndarray,
    size: int | tuple[int, int],
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
) -> torch.Tensor:
    """Sample4Geo's test-time preprocessing: ``(3, H, W)`` float32 (module docstring); ``size`` is the square
    side or ``(H, W)`` (a ground panorama, :func:`ground_size`).

    ``image`` is a PIL image (its EXIF orientation is applied, as ``cv2.imread`` does; then RGB) or an RGB
    ``uint8`` array ``(H, W, 3)``. Resize: ``cv2.resize(..., (W, H), interpolation=cv2.INTER_LINEAR_EXACT)``
    (albumentations' ``A.Resize(H, W)``; no antialiasing, no crop); normalisation: albumentations'
    ``(x - 255 mean) * (1 / (255 std))`` in float32.
    """
    height, width = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    cv2 = _cv2()
    if isinstance(image, Image.Image):
        from PIL import ImageOps

        from skyrank.images import to_uint8_rgb  # 16-bit scaled, not clipped white

        image = np.asarray(to_uint8_rgb(ImageOps.exif_transpose(image)))
    rgb = np.ascontiguousarray(image)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR_EXACT)
    mean_255 = np.array(mean, dtype=np.float32) * 255.0
    inv_std_255 = np.reciprocal(np.array(std, dtype=np.float32) * 255.0)
    x = (resized.astype(np.float32) - mean_255) * inv_std_255
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class Sample4GeoModel(nn.Module):
    """A timm backbone with a learnable ``logit_scale``; state dict keys ``model.*`` + ``logit_scale``.

    ``forward`` returns the pooled, *unnormalised* embedding (as Sample4Geo's ``TimmModel.forward``).
    """

    def __init__(self, arch: str = DEFAULT_ARCH, image_size: int | None = None) -> None:
        super().__init__()
        import timm

        kwargs: dict = {}
        if image_size is not None and ("vit" in arch or "eva" in arch or "deit" in arch):
            kwargs["img_size"] = image_size  # Sample4Geo passes img_size only to ViT-style models
        self.arch = arch
        self.model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        self.logit_scale = nn.Parameter(torch.ones([]) * LOGIT_SCALE_INIT)

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Sample4GeoRetriever(Retriever):
    """Sample4Geo as a SkyRank :class:`~skyrank.retrievers._base.Retriever` (one backbone for both views)."""

    name = "sample4geo"

    def __init__(
        self,
        arch: str = DEFAULT_ARCH,
        image_size: int | None = None,
        device: str | torch.device = "cpu",
        checkpoint: str | Path | None = None,
        amp: str = "fp16",
    ) -> None:
        if amp not in _AMP_DTYPES:
            raise ValueError(f"amp must be one of {sorted(_AMP_DTYPES)}, got {amp!r}")
        model = Sample4GeoModel(arch, image_size=image_size)
        cfg = dataclasses.replace(
            SAMPLE4GEO_CFG, image_size=int(image_size or SAMPLE4GEO_CFG.image_size), embed_dim=model.num_features
        )
        super().__init__(cfg, device=device, checkpoint=checkpoint)
        self.arch = arch
        self.amp = amp
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
        self.model = model.to(self.device).eval()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Sample4Geo's own preprocessing (:func:`sample4geo_preprocess`), not the base class's torchvision resize."""
        return sample4geo_preprocess(image, self.image_size, self.cfg.mean, self.cfg.std)

    def input_size(self, view: str) -> tuple[int, int]:
        """``(H, W)`` of a view: the benchmark's ground size (:func:`ground_size`; VIGOR 384 x 768, CVUSA/CVACT
        140 x 768) for ``ground``, else the square ``image_size``."""
        if check_view(view) == "ground":
            size = ground_size(self.dataset, self.image_size)
            if size is not None:
                return size
        return (self.image_size, self.image_size)

    def preprocess_view(self, image: Image.Image, view: str) -> torch.Tensor:
        """:func:`sample4geo_preprocess` to :meth:`input_size` of ``view`` (panoramas keep Sample4Geo's shape)."""
        return sample4geo_preprocess(image, self.input_size(view), self.cfg.mean, self.cfg.std)

    def embed(self, batch: torch.Tensor, view: str) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, D)`` float32, L2-normalised. Every view uses the same backbone (Sample4Geo
        shares one ConvNeXt between ground or drone queries and satellite references)."""
        check_view(view)
        batch = batch.to(self.device, non_blocking=True)
        dtype = _AMP_DTYPES[self.amp]
        use_amp = self.device.type == "cuda" and dtype is not None and not torch.is_autocast_enabled("cuda")
        ctx = torch.autocast("cuda", dtype=dtype) if use_amp else nullcontext()
        with torch.inference_mode(), ctx:
            feats = self.model(batch)
        return F.normalize(feats.float(), dim=-1)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a checkpoint onto :class:`Sample4GeoModel`'s keys.

    - Official Sample4Geo files (``model.*`` + ``logit_scale``, saved from ``model.module`` so without a
      ``module.`` prefix) pass through unchanged.
    - ``_orig_mod.`` (``torch.compile``) prefixes are removed.
    - A bare timm backbone state dict (no key under ``model.`` and no ``logit_scale``; e.g. timm's own ImageNet
      weights, downloaded by the user) is prefixed with ``model.``; its 1000-way classifier ``head.fc.*`` is dropped
      (Sample4Geo builds the backbone with ``num_classes=0``) and ``logit_scale`` gets Sample4Geo's initial value
      (it only scales training logits and never changes an embedding).

    Anything else is left for the strict load to report.
    """
    sd = {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}
    if "logit_scale" not in sd and not any(k.startswith("model.") for k in sd):
        sd = {f"model.{k}": v for k, v in sd.items() if not k.startswith("head.fc.")}
        sd["logit_scale"] = torch.tensor(LOGIT_SCALE_INIT)
    return sd


def load_checkpoint(model: Sample4GeoModel, checkpoint: str | Path) -> None:
    """read (weights_only / safetensors) → strip ``module.`` → :func:`checkpoint_filter_fn` → strict load."""
    sd = read_state_dict(checkpoint)
    sd = strip_prefix(sd, "module.")
    sd = checkpoint_filter_fn(sd)
    load_strict(model, sd, source=f"checkpoint {checkpoint} (sample4geo, arch={model.arch})")


@register_retriever(
    "sample4geo",
    weights_hint="Sample4Geo's released weights: weights_e1_0.9515.pth (University-1652), weights_e40_0.7786.pth "
    "(VIGOR same-area), weights_e40_0.6109.pth (VIGOR cross-area), weights_e40_98.6830.pth (CVUSA), "
    "weights_e36_90.8149.pth (CVACT)",
)
def sample4geo(
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    arch: str = DEFAULT_ARCH,
    image_size: int | None = None,
    amp: str = "fp16",
) -> Sample4GeoRetriever:
    """Sample4Geo on timm ``arch`` (default: the official ConvNeXt-B 384); random weights if no checkpoint."""
    return Sample4GeoRetriever(arch=arch, image_size=image_size, device=device, checkpoint=checkpoint, amp=amp)


# --------------------------------------------------------------------------------------------------- training
#: Default training input side of a timm ``arch`` other than ``"sample4geo"`` (CPU-friendly).
TIMM_TRAIN_IMAGE_SIZE = 128


class Sample4GeoTraining(TrainingSpec):
    """Sample4Geo's layout: ``weights_*.pth`` of :class:`Sample4GeoModel` with its own ``logit_scale``; also trains
    any timm architecture name in that layout."""

    retriever = "sample4geo"
    prefix = "weights"
    interpolation = "bilinear"
    external_scale = False
    classifier_heads = False
    claims_any_arch = True

    def resolve(self, arch: str, image_size: int | None) -> tuple[str, int]:
        if arch == "sample4geo":
            return DEFAULT_ARCH, int(image_size or SAMPLE4GEO_CFG.image_size)
        return arch, int(image_size or TIMM_TRAIN_IMAGE_SIZE)

    def build(self, arch: str, image_size: int, nclasses: int, block: int) -> nn.Module:
        return Sample4GeoModel(arch, image_size=image_size)

    def load(self, model: nn.Module, checkpoint: str | Path) -> None:
        load_checkpoint(model, checkpoint)  # type: ignore[arg-type]

    def load_with(self, out_dir: Path, arch: str, image_size: int) -> str:
        end = out_dir / f"{self.prefix}_end.pth"
        return f'create("sample4geo", checkpoint="{end}", arch="{arch}", image_size={image_size})'

    def versions(self) -> dict[str, str]:
        import timm

        return {"timm": str(timm.__version__)}


register_training_spec(Sample4GeoTraining())
