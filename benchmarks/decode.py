"""Time and peak memory of decoding one huge image: PIL's plain ``open().convert("RGB")`` against
:func:`skyrank.images.open_rgb` (the one bounded decoder every retriever uses), each in a fresh process.

    python benchmarks/decode.py --side 12000 --work /tmp/decode-bench

Writes a ``side`` x ``side`` PNG (smooth gradient: a small file, under PIL's decompression-bomb limit at 12000) and
a JPEG of the same picture, then decodes each with both functions at the default 64-megapixel budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
path, how = Path(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
status = "decoded"
try:
    if how == "pil":
        from PIL import Image
        Image.MAX_IMAGE_PIXELS = None  # what a user who silences PIL's warning gets
        with Image.open(path) as im:
            size = im.convert("RGB").size
    else:
        from skyrank.images import open_rgb
        size = open_rgb(path).size
except Exception as e:
    status, size = f"refused: {str(e)[:90]}", None
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": rss, "status": status, "size": size}))
"""


def _make(side: int, work: Path) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    work.mkdir(parents=True, exist_ok=True)
    png, jpg = work / f"huge{side}.png", work / f"huge{side}.jpg"
    if not png.is_file() or not jpg.is_file():
        ramp = (np.arange(side, dtype=np.uint32) * 255 // max(1, side - 1)).astype(np.uint8)
        img = np.empty((side, side, 3), dtype=np.uint8)
        img[..., 0] = ramp[None, :]
        img[..., 1] = ramp[:, None]
        img[..., 2] = 128
        Image.fromarray(img).save(png, optimize=False)
        Image.fromarray(img).save(jpg, quality=90)
    return png, jpg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/decode-bench"))
    ap.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_only:
        _make(args.side, args.work)
        return
    # The files are written by a child process: a child forked from a parent that held the picture would report
    # the parent's peak RSS as its own (ru_maxrss survives fork + exec).
    subprocess.run(
        [sys.executable, __file__, "--make-only", "--side", str(args.side), "--work", str(args.work)], check=True
    )
    png, jpg = args.work / f"huge{args.side}.png", args.work / f"huge{args.side}.jpg"
    print(f"{args.side}x{args.side}: PNG {png.stat().st_size / 1e6:.1f} MB, JPEG {jpg.stat().st_size / 1e6:.1f} MB")
    print(f"{'file':<6} {'decoder':<9} {'seconds':>8} {'peak RSS MB':>12}  result")
    for path in (png, jpg):
        for how in ("pil", "open_rgb"):
            out = subprocess.run([sys.executable, "-c", _CHILD, str(path), how], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:])
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            result = r["status"] + (f" {r['size'][0]}x{r['size'][1]}" if r["size"] else "")
            print(f"{path.suffix[1:]:<6} {how:<9} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12.0f}  {result}")


if __name__ == "__main__":
    main()
