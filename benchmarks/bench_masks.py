"""Instance-mask finishing: the reference's whole-canvas resize per instance vs the windowed one.

    python benchmarks/bench_masks.py [--runs 3] [--threads N] [--device cuda] [--instances 100]

Two kinds of mask logits, 80x80 at stride 8 (a 640x640 input): "compact" (round instances of
radius 1-13 cells with noise: what a trained model gives) and "fixture" (the RTMDet-Ins fixture
weights, random: each mask covers most of the image, the worst case for windows), for original
images of 1920x1080, 640x480 and 375x500. Prints the median time of each path, the ratio, and
whether the masks are identical.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import rtmdet
from rtmdet.deploy.bench import median_seconds
from rtmdet.ops.instance_masks import logits_to_masks, whole_canvas_masks

SHARED = Path(os.environ.get("RTMDET_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
INS_FIX = SHARED / "fixtures" / "rtmdet-ins_tiny_8xb32-300e_coco"
IMAGES = {"1920x1080": ((1080, 1920), (1 / 3, 1 / 3)), "640x480": ((480, 640), (1.0, 1.0)),
          "375x500": ((500, 375), (1.28, 1.28))}


def compact_logits(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(80.0), torch.arange(80.0), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * 80
    radius = torch.rand(n, generator=g) * 12 + 1
    dist = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2).sqrt()
    return radius[:, None, None] - dist + 0.3 * torch.randn(n, 80, 80, generator=g)


def fixture_logits(n: int) -> torch.Tensor | None:
    """Mask logits of the fixture model's top-`n` detections on the fixture's square image."""
    path = INS_FIX / "weights.pth"
    if not path.is_file():
        return None
    import rtmdet.families.segment as seg
    model = rtmdet.load(path, progress=False).eval()
    image = torch.load(INS_FIX / "predict_square.pth", weights_only=False)["image_bgr"].numpy()
    seen = []
    real = seg.logits_to_masks
    seg.logits_to_masks = lambda logits, *a, **k: seen.append(logits) or real(logits, *a, **k)
    try:
        model.predict(image, score_thr=0.01, max_per_img=n)
    finally:
        seg.logits_to_masks = real
    return seen[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--instances", type=int, default=100)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = {"compact": compact_logits(args.instances), "fixture": fixture_logits(args.instances)}
    print(f"{args.instances} instances, device {args.device}, {torch.get_num_threads()} threads")
    print("| logits | image | whole canvas ms | windowed ms | speed-up | identical |")
    print("|---|---|---|---|---|---|")
    for kind, logits in kinds.items():
        if logits is None:
            print(f"| {kind} | (fixtures not present) | | | | |")
            continue
        logits = logits.to(args.device)
        for name, (ori, scale) in IMAGES.items():
            old = whole_canvas_masks(logits, ori, scale)
            new = logits_to_masks(logits, ori, scale)
            t_old = 1000 * median_seconds(lambda: whole_canvas_masks(logits, ori, scale), args.runs)
            t_new = 1000 * median_seconds(lambda: logits_to_masks(logits, ori, scale), args.runs)
            print(f"| {kind} | {name} | {t_old:.1f} | {t_new:.1f} | {t_old / t_new:.2f}x | "
                  f"{torch.equal(old, new)} |")


if __name__ == "__main__":
    main()
