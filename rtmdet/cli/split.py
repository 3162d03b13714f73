"""`rtmdet split`: cut large images (DOTA) and their polygon labels into patches, as mmrotate's
`img_split.py` does (`rtmdet.data.split.split_images`)."""
from __future__ import annotations

from pathlib import Path

from .common import UsageError, non_negative_int, positive_float, positive_int, unit_float

LABEL_DIRS = ("labelTxt", "annfiles")


def source_folders(source: Path, labels: str | None) -> tuple[Path, Path | None]:
    """(images folder, labels folder or None): `source` is a folder of images, or a DOTA folder
    with images/ and labelTxt/ (or annfiles/); --labels overrides the labels folder."""
    images = source / "images" if (source / "images").is_dir() else source
    if labels is not None:
        return images, Path(labels)
    for name in LABEL_DIRS:
        for base in (source, images.parent):
            if (base / name).is_dir():
                return images, base / name
    return images, None


def cmd_split(args) -> int:
    from ..data.split import split_images

    source = Path(args.source)
    if not source.is_dir():
        raise UsageError(f"not a folder: {source}")
    if args.overlap >= args.patch:
        raise UsageError(f"--overlap {args.overlap} must be smaller than --patch {args.patch}")
    images, labels = source_folders(source, args.labels)
    if len(args.pad_value) not in (1, 3) or max(args.pad_value) > 255:
        raise UsageError("--pad-value: one value or three (B G R), each 0..255")
    pad = args.pad_value[0] if len(args.pad_value) == 1 else tuple(args.pad_value)
    ext = args.ext if args.ext.startswith(".") else f".{args.ext}"
    try:
        summary = split_images(images, labels, args.out, patch=args.patch, overlap=args.overlap,
                               rates=args.rates, iof_thr=args.iof_thr, pad_value=pad,
                               img_rate_thr=args.img_rate_thr, ext=ext)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise UsageError(str(e)) from None
    if labels is None:
        print(f"no labels folder ({' or '.join(LABEL_DIRS)}) next to {images}: patches get "
              "empty label files")
    print(summary)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("split", help="cut large images and their DOTA labels into patches "
                                     "(as mmrotate's img_split.py)")
    p.add_argument("source", help="a DOTA folder (images/ + labelTxt/ or annfiles/) or a folder "
                                  "of images")
    p.add_argument("--out", required=True, help="output folder (new or empty): images/ + annfiles/")
    p.add_argument("--labels", default=None, help="DOTA label folder (default: found next to the images)")
    p.add_argument("--patch", type=positive_int, default=1024, help="patch size in px (default 1024)")
    p.add_argument("--overlap", type=non_negative_int, default=200,
                   help="overlap of neighbouring patches in px (default 200)")
    p.add_argument("--rates", type=positive_float, nargs="+", default=[1.0],
                   help="scales: windows of patch/rate px, not resized (default 1.0; "
                        "multi-scale DOTA: 0.5 1.0 1.5)")
    p.add_argument("--iof-thr", type=unit_float, default=0.7,
                   help="keep an object in a patch when this share of it is inside (default 0.7)")
    p.add_argument("--img-rate-thr", type=unit_float, default=0.6,
                   help="drop windows covering at most this share of image (default 0.6)")
    p.add_argument("--pad-value", type=non_negative_int, nargs="+", default=[114],
                   help="padding of patches past the image edge: one value or B G R (default 114)")
    p.add_argument("--ext", default=".png", help="patch image format (default .png)")
    p.set_defaults(func=cmd_split)
