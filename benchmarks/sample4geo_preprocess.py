"""Sample4Geo preprocessing fidelity: SkyRank's tensors against the original pipeline's, and the old resize's drift.

The original pipeline (facts from Skyy93/Sample4Geo ``sample4geo/dataset/university.py``, reimplemented here with
OpenCV and numpy, no code copied): ``cv2.imread`` → BGR→RGB → ``cv2.resize(384x384, INTER_LINEAR_EXACT)`` →
albumentations' ``Normalize`` (``(x - 255 mean) / (255 std)`` in float32) → CHW. Images: textured JPEG (4:4:4, 4:2:2,
4:2:0) and PNG files of 200-600 px, written to a temporary folder. For each image it prints the max absolute tensor
difference of SkyRank's ``sample4geo`` preprocessing (PIL decode + :func:`sample4geo_preprocess`) against the
original, the same for SkyRank's earlier torchvision antialiased resize (in grey levels and tensor units), and the
embedding cosine of both against the original on a randomly initialised ConvNeXt (no weights are downloaded).
Then the ground panoramas of issue 20 (``eval_vigor_*.py``, ``eval_cvusa.py``, ``eval_cvact.py``: the same resize to
384 x 768 for VIGOR, 140 x 768 for CVUSA and CVACT), SkyRank's ``preprocess_view(image, "ground")`` of a retriever
created with ``dataset=`` against the original at that size.

    python benchmarks/sample4geo_preprocess.py [--arch convnext_atto]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def original_tensor(path: Path, size: int | tuple[int, int]) -> torch.Tensor:
    """Sample4Geo's eval transform on a file (``size``: side or (H, W)), with OpenCV as the original does."""
    import cv2

    h, w = (size, size) if isinstance(size, int) else size
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR_EXACT)
    mean = np.array(MEAN, dtype=np.float32) * 255.0
    inv = np.reciprocal(np.array(STD, dtype=np.float32) * 255.0)
    x = (img.astype(np.float32) - mean) * inv
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def torchvision_tensor(path: Path, size: int) -> torch.Tensor:
    """SkyRank's earlier sample4geo preprocessing: PIL decode, torchvision antialiased bilinear, normalise."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    with Image.open(path) as img:
        x = TF.pil_to_tensor(img.convert("RGB"))
    x = TF.resize(x, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True).float().div_(255.0)
    return TF.normalize(x, MEAN, STD)


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colour field plus fine texture: the high frequencies that aliasing without antialiasing keeps."""
    import cv2

    rng = np.random.default_rng(seed)
    base = (rng.random((max(2, h // 16), max(2, w // 16), 3)) * 255).astype(np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int32)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = (40 * np.sin(xx * 1.9 + yy * 0.7))[..., None]
    return np.clip(img + stripes + rng.integers(-25, 26, img.shape), 0, 255).astype(np.uint8)


CASES = [  # (name, height, width, format, save kwargs)
    ("jpeg-512x512-444", 512, 512, "JPEG", {"quality": 95, "subsampling": 0}),
    ("jpeg-600x480-420", 600, 480, "JPEG", {"quality": 85, "subsampling": 2}),
    ("jpeg-256x320-422", 256, 320, "JPEG", {"quality": 90, "subsampling": 1}),
    ("png-512x512", 512, 512, "PNG", {}),
    ("png-200x240", 200, 240, "PNG", {}),
]


PANORAMAS = [  # (name, dataset, height, width, format, save kwargs): the benchmarks' panorama sizes
    ("vigor-1024x2048", "vigor", 1024, 2048, "JPEG", {"quality": 90, "subsampling": 2}),
    ("cvusa-224x1232", "cvusa", 224, 1232, "JPEG", {"quality": 90, "subsampling": 2}),
    ("cvact-832x1664", "cvact", 832, 1664, "JPEG", {"quality": 90, "subsampling": 2}),
]


def panoramas(arch: str, size: int, tmp: str) -> None:
    """SkyRank's ground preprocessing against the original at each benchmark's panorama size."""
    from skyrank.retrievers import create

    print(f"\nground panoramas (issue 20), embeddings: {arch} (random init)")
    print(f"{'image':<20} {'input (H, W)':>13} {'skyrank max|d|':>15} {'cos':>10}")
    for i, (name, dataset, h, w, fmt, kwargs) in enumerate(PANORAMAS):
        torch.manual_seed(0)
        retriever = create("sample4geo", arch=arch, image_size=size, amp="fp32", dataset=dataset, random_weights=True)
        path = Path(tmp) / f"{name}.{fmt.lower()}"
        Image.fromarray(textured(h, w, seed=10 + i)).save(path, fmt, **kwargs)
        target = retriever.input_size("ground")
        ref = original_tensor(path, target)
        with Image.open(path) as img:
            ours = retriever.preprocess_view(img, "ground")
        emb = retriever.embed(torch.stack([ref, ours]), "ground")
        print(f"{name:<20} {str(target):>13} {float((ours - ref).abs().max()):>15.3g} {float(emb[0] @ emb[1]):>10.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="convnext_atto", help="timm arch for the embedding cosine (random init)")
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()

    from skyrank.retrievers import create

    torch.manual_seed(0)
    retriever = create("sample4geo", arch=args.arch, image_size=args.size, amp="fp32", random_weights=True)
    print(f"sample4geo preprocessing vs the original pipeline, {args.size}px, embeddings: {args.arch} (random init)")
    print(f"{'image':<20} {'skyrank max|d|':>15} {'cos':>10} {'old grey lv':>12} {'old max|d|':>11} {'old cos':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, h, w, fmt, kwargs) in enumerate(CASES):
            path = Path(tmp) / f"{name}.{fmt.lower()}"
            Image.fromarray(textured(h, w, seed=i)).save(path, fmt, **kwargs)
            ref = original_tensor(path, args.size)
            with Image.open(path) as img:
                ours = retriever.preprocess(img)
            old = torchvision_tensor(path, args.size)
            grey = float(((old - ref) * torch.tensor(STD)[:, None, None] * 255).abs().max())
            emb = retriever.embed(torch.stack([ref, ours, old]), "drone")
            cos_ours, cos_old = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
            print(
                f"{name:<20} {float((ours - ref).abs().max()):>15.3g} {cos_ours:>10.6f} {grey:>12.1f} "
                f"{float((old - ref).abs().max()):>11.3f} {cos_old:>9.5f}"
            )
        panoramas(args.arch, args.size, tmp)


if __name__ == "__main__":
    main()
