"""Images per second of every registered image retriever, measured side by side in one run.

    python benchmarks/retrievers.py                       # CPU, small inputs (the defaults below)
    python benchmarks/retrievers.py --real-sizes --device cuda --amp bf16 --channels-last

Random weights (nothing is downloaded); the figure is the forward pass of ``Retriever.embed`` (flip-sum included
for MCCG/SDPL) on a fixed batch, after warm-up, best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time

import torch

from skyrank.retrievers import create, list_retrievers

#: small CPU sizes (the smallest each architecture accepts comfortably) and the real ones
SMALL = {
    "sample4geo": dict(arch="convnext_atto", image_size=64),
    "mccg": dict(image_size=64),
    "sdpl": dict(image_size=256),
}
REAL = {"sample4geo": dict(), "mccg": dict(image_size=256), "sdpl": dict(image_size=512)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real-sizes", action="store_true", help="paper input sizes and architectures")
    ap.add_argument("--amp", choices=["fp32", "fp16", "bf16"], default="fp32", help="autocast dtype (GPU)")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    sizes = REAL if args.real_sizes else SMALL
    print(f"device {args.device}, batch {args.batch_size}, amp {args.amp}, channels_last {args.channels_last}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'retriever':<12} {'input':>6} {'dim':>6} {'images/s':>10}")
    results = {}
    for name in list_retrievers():
        if name not in sizes:
            continue
        r = create(name, device=args.device, random_weights=True, **sizes[name])
        r.eval()
        if args.channels_last:
            r.model.to(memory_format=torch.channels_last)
        x = torch.randn(args.batch_size, 3, r.image_size, r.image_size, device=args.device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp)
        device_type = torch.device(args.device).type
        ctx = torch.autocast(device_type, dtype=dtype) if dtype else torch.autocast(device_type, enabled=False)
        with ctx:
            r.embed(x, "drone")  # warm-up
            best = float("inf")
            for _ in range(args.repeats):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                r.embed(x, "drone")
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
        results[name] = args.batch_size / best
        print(f"{name:<12} {r.image_size:>6} {r.embed_dim:>6} {results[name]:>10.1f}")
    base = results.get("sample4geo")
    if base:
        print("relative to sample4geo: " + ", ".join(f"{k} {v / base:.3g}x" for k, v in results.items()))


if __name__ == "__main__":
    main()
