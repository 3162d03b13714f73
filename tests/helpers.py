"""Shared test utilities (fixture paths, detection matching, a local file server)."""
from __future__ import annotations

import contextlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

# The reference fixtures live outside the repository (../shared next to the clone, or
# $RTMDET_SHARED). A user's clone without them skips the tests that need them, with one reason;
# with RTMDET_REQUIRE_FIXTURES=1 (CI, when they are present) such a skip is a failure instead.
SHARED = Path(os.environ.get("RTMDET_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
FIXTURES = SHARED / "fixtures"
DET_FIX = FIXTURES / "rtmdet_tiny_8xb32-300e_coco"
INS_FIX = FIXTURES / "rtmdet-ins_tiny_8xb32-300e_coco"


SKIP_REASON = "reference fixtures not present"


def need(path: Path) -> Path:
    """`path`, or a skip ("reference fixtures not present: <path>") when it is missing; a
    failure instead when RTMDET_REQUIRE_FIXTURES=1."""
    if not Path(path).exists():
        if os.environ.get("RTMDET_REQUIRE_FIXTURES") == "1":
            pytest.fail(f"{SKIP_REASON}: {path} is missing (RTMDET_REQUIRE_FIXTURES=1)", pytrace=False)
        pytest.skip(f"{SKIP_REASON} at {FIXTURES} (set RTMDET_SHARED to the folder holding fixtures/)")
    return path


def shapes_data(root: Path, train: int = 2, val: int = 1) -> Path:
    """A tiny synthetic COCO-json shapes dataset (64x64 images) for training tests."""
    from rtmdet.data.synthetic import make_shapes_splits
    make_shapes_splits(root, {"train": train, "val": val}, image_size=(64, 64), scale_range=(0.3, 0.6))
    return root


def tiny_train_cfg(data, project, **kw):
    """A TrainConfig for a few 64-px steps on the CPU, offline; `kw` overrides."""
    from rtmdet.train.config import TrainConfig
    return TrainConfig(**{**dict(data=str(data), epochs=1, batch=2, imgsz=64, workers=0, device="cpu",
                                 project=str(project), plots=False, pretrained_backbone=False,
                                 val_interval=5), **kw})


def load_fixture(path: Path):
    return torch.load(need(path), map_location="cpu", weights_only=True)


def match_detections(boxes, scores, labels, ref_boxes, ref_scores, ref_labels,
                     score_tol=1e-4, box_tol=1e-2):
    """Greedy one-to-one matching of two detection sets (same label, score within `score_tol`,
    box within `box_tol` pixels). Returns the number of reference detections left unmatched."""
    boxes, scores, labels = (np.asarray(t, dtype=np.float64) for t in (boxes, scores, labels))
    rb, rs, rl = (np.asarray(t, dtype=np.float64) for t in (ref_boxes, ref_scores, ref_labels))
    used = np.zeros(len(scores), bool)
    unmatched = 0
    for i in range(len(rs)):
        ok = (~used) & (labels == rl[i]) & (np.abs(scores - rs[i]) <= score_tol) & \
             (np.abs(boxes - rb[i]).max(axis=1) <= box_tol)
        j = np.flatnonzero(ok)
        if len(j) == 0:
            unmatched += 1
        else:
            used[j[0]] = True
    return unmatched


def pair_rows(boxes, scores, labels, ref_boxes, ref_scores, ref_labels):
    """For each row, the index of the reference row with the same label, score within 1e-4 and
    box within 1e-4 + 1e-4 x |value| (asserts that every row has one); rows whose scores tie to
    float rounding may come in another order."""
    used = np.zeros(len(ref_scores), bool)
    perm = []
    for b, s, lab in zip(boxes, scores, labels):
        ok = (~used) & (ref_labels == lab) & (np.abs(ref_scores - s) <= 1e-4) & \
            (np.abs(ref_boxes - b) <= 1e-4 + 1e-4 * np.abs(b)).all(1)
        j = np.flatnonzero(ok)
        assert len(j), (b, s, lab)
        used[j[0]] = True
        perm.append(int(j[0]))
    return np.array(perm)


def save_random_checkpoint(path: Path, name: str = "rtmdet-tiny", class_names=None, imgsz=None,
                           seed=None) -> Path:
    """A randomly initialised model saved as our checkpoint (meta included), for CLI tests;
    `class_names` set its classes, `imgsz` its test size, `seed` its weights."""
    import rtmdet
    from rtmdet.api import checkpoint_meta
    if seed is not None:
        torch.manual_seed(seed)
    kw = {} if class_names is None else {"num_classes": len(class_names), "class_names": list(class_names)}
    m = rtmdet.create(name, **kw)
    if imgsz is not None:
        m.test_cfg.imgsz = imgsz
    torch.save({"meta": checkpoint_meta(m), "state_dict": m.state_dict()}, path)
    return path


def model_with_boxes(class_names, imgsz: int, box_bias=(0.2, 1.5), seed: int = 0):
    """A random rtmdet-tiny (eval mode) whose box regression biases are drawn from `box_bias`,
    so every prior predicts a box of a few strides (the reference's init predicts nearly empty
    boxes, which the post-processing drops): detections to crop, merge or draw."""
    import rtmdet
    torch.manual_seed(seed)
    m = rtmdet.create("rtmdet-tiny", num_classes=len(class_names), class_names=list(class_names))
    m.test_cfg.imgsz = imgsz
    for name, p in m.named_parameters():
        if "rtm_reg" in name and name.endswith("bias"):
            torch.nn.init.uniform_(p, *box_bias)
    return m.eval()


def save_model(model, path: Path) -> Path:
    """`model` saved as our checkpoint (meta included), what `rtmdet.load` and the CLI read."""
    from rtmdet.api import checkpoint_meta
    torch.save({"meta": checkpoint_meta(model), "state_dict": model.state_dict()}, path)
    return path


def unpack_masks(fix: dict) -> np.ndarray:
    """A `-ins` fixture's bit-packed reference masks -> (N,H,W) bool."""
    n, h, w = fix["masks_shape"]
    packed = np.asarray(fix["masks_packed"])
    return np.unpackbits(packed, axis=-1)[..., :w].astype(bool).reshape(n, h, w)


def mask_ious(det, fix: dict) -> list[float]:
    """Pair each reference instance with one of `det` (same label, closest score and box) and
    return the IoU of each pair's masks."""
    ref_masks = unpack_masks(fix)
    ours = det.numpy()
    used = np.zeros(len(ours), bool)
    ious = []
    for i in range(len(ref_masks)):
        cost = np.abs(ours.scores - float(fix["scores"][i])) * 1e3 + \
            np.abs(ours.boxes - np.asarray(fix["bboxes"][i])).max(axis=1)
        cost[(ours.labels != int(fix["labels"][i])) | used] = np.inf
        j = int(np.argmin(cost))
        used[j] = True
        a, b = ours.masks[j], ref_masks[i]
        union = (a | b).sum()
        ious.append(1.0 if union == 0 else float((a & b).sum() / union))
    return ious


def run_onnx(path, x):
    """All outputs of an ONNX file for input `images` = x, on ONNX Runtime's CPU provider."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})


def assert_level_losses_close(losses: dict, ref_losses: dict) -> None:
    """loss_cls and loss_bbox: three levels each, every level within rtol 1e-3 of the reference."""
    for key in ("loss_cls", "loss_bbox"):
        assert len(losses[key]) == len(ref_losses[key]) == 3
        for mine, theirs in zip(losses[key], ref_losses[key]):
            torch.testing.assert_close(mine.detach(), theirs, rtol=1e-3, atol=0)


def assert_assignment_equal(assign, ref_assigned) -> None:
    """gt index and label of every prior equal; matched IoUs equal to float rounding (background
    holds -1e8 exactly)."""
    for i, r in enumerate(ref_assigned):
        assert torch.equal(assign.gt_inds[i], r["gt_inds"])
        assert torch.equal(assign.labels[i], r["labels"])
        torch.testing.assert_close(assign.max_overlaps[i], r["max_overlaps"], rtol=1e-4, atol=1e-4)


class FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves `files[name]` for any path ending in `/name` (404 otherwise), honours Range, and
    hangs up half-way once for names in `truncate_once`; requests land in `log`."""
    files: dict = {}
    truncate_once: set = set()
    log: list = []

    def log_message(self, *a):  # keep test output quiet
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        self.log.append((name, rng))
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.truncate_once:  # promise everything, send half, hang up
            self.truncate_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def file_server():
    """A 127.0.0.1 HTTP server on a free port for `FileHandler` (its state reset); yields the
    base URL and shuts the server down afterwards."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FileHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    FileHandler.files, FileHandler.truncate_once, FileHandler.log = {}, set(), []
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def infer_arrays(detector, x):
    """A Detector's raw graph outputs for input `x`, as numpy arrays in output order."""
    return [np.asarray(v) for v in detector.infer(x).values()]


# ------------------------------------------------------------------ failing disks
ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], read_only: Path | None = None, timeout: float = 300):
    """`python -m rtmdet ARGS` in a fresh process (CompletedProcess, text). `read_only`: a
    folder the command sees read-only: chmod 0555 for a normal user; as root (which ignores
    permissions) a read-only bind mount in a private mount namespace (`unshare -m`)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rtmdet", *map(str, args)]
    if read_only is None:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    read_only = Path(read_only)
    if os.geteuid() != 0:
        mode = read_only.stat().st_mode
        read_only.chmod(0o555)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        finally:
            read_only.chmod(mode)
    mount = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mount, "sh", str(read_only), "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root without mount namespaces: cannot make {read_only} "
                    f"read-only ({probe.stderr.strip()[:100]})")
    return subprocess.run(["unshare", "-m", "sh", "-c", mount, "sh", str(read_only), *cmd],
                          capture_output=True, text=True, env=env, timeout=timeout)


def disk_full_after(monkeypatch, budget: int, match: str = ""):
    """Every `os.write` to a file whose path contains `match` fails with ENOSPC ("No space left
    on device") once `budget` bytes have gone to such files: a disk filling up half-way through
    the writes (`rtmdet.atomic` writes through `os.write`). Returns the list of bytes written."""
    import errno
    import os
    real = os.write
    written = [0]

    def write(fd, data):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if match not in name or not name.startswith("/"):
            return real(fd, data)
        room = budget - written[0]
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(memoryview(data)[:room]))
        written[0] += n
        return n

    monkeypatch.setattr(os, "write", write)
    return written


class DenseMasks:
    """The oracle for `rtmdet.data.targets.MaskTarget`: full (n, H, W) bitmaps moved with the
    plainest numpy / OpenCV operations (per-mask cv2.resize INTER_NEAREST, zero canvas + slice,
    reversed views), none of the crop bookkeeping it checks."""

    def __init__(self, data):
        self.data = np.asarray(data, np.uint8)

    def __len__(self):
        return len(self.data)

    def select(self, keep):
        return DenseMasks(self.data[np.asarray(keep)])

    def resize(self, sx, sy, width, height):
        import cv2
        if not len(self.data):
            return DenseMasks(np.zeros((0, height, width), np.uint8))
        return DenseMasks(np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
                                    for m in self.data]))

    def flip(self, width, height, direction="horizontal"):
        fx, fy = direction in ("horizontal", "diagonal"), direction in ("vertical", "diagonal")
        return DenseMasks(self.data[:, ::-1 if fy else 1, ::-1 if fx else 1].copy())

    def rotate(self, angle, width, height):
        import cv2

        from rtmdet.data.targets import rotation_matrix
        m = rotation_matrix(angle, (width - 1) * 0.5, (height - 1) * 0.5)
        return DenseMasks(np.stack([cv2.warpAffine(x, m, (width, height), flags=cv2.INTER_LINEAR)
                                    for x in self.data]) if len(self.data) else self.data)

    def translate(self, dx, dy, width, height):
        n, h, w = self.data.shape  # output pixel (y, x) reads source (y - dy, x - dx) if inside
        ys, xs = np.arange(height) - dy, np.arange(width) - dx
        iy, ix = np.flatnonzero((ys >= 0) & (ys < h)), np.flatnonzero((xs >= 0) & (xs < w))
        out = np.zeros((n, height, width), np.uint8)
        out[np.ix_(np.arange(n), iy, ix)] = self.data[np.ix_(np.arange(n), ys[iy], xs[ix])]
        return DenseMasks(out)

    def crop(self, x0, y0, width, height):
        return self.translate(-x0, -y0, width, height)

    def blank(self, n, width, height):
        return DenseMasks(np.zeros((n, height, width), np.uint8))

    @classmethod
    def concat(cls, parts):
        return cls(np.concatenate([p.data for p in parts]))

    def boxes(self):
        out = np.zeros((len(self.data), 4), np.float32)
        for i, m in enumerate(self.data):
            ys, xs = np.nonzero(m)
            if len(xs):
                out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        return out

    def as_array(self):
        return self.data


class RefPolygons:
    """The oracle for `rtmdet.data.polygon_masks.PolygonTarget`: mmdet ``PolygonMasks``'
    operations written the plain way (a Python loop per polygon, shapely's scalar API polygon
    by polygon for the crop, separate horizontal and vertical translates, pycocotools to draw),
    none of the vectorisation or the rasteriser it checks."""

    def __init__(self, polys, width, height):
        self.polys = [[np.array(p, np.float64) for p in ps] for ps in polys]
        self.width, self.height = width, height

    def __len__(self):
        return len(self.polys)

    def select(self, keep):
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return RefPolygons([self.polys[i] for i in idx], self.width, self.height)

    def resize(self, sx, sy, width, height):
        # mmcv.rescale_size on the masks' own size, then PolygonMasks.resize
        new_w, new_h = int(self.width * float(sx) + 0.5), int(self.height * float(sy) + 0.5)
        out = []
        for ps in self.polys:
            row = []
            for p in ps:
                p = p.copy()
                p[0::2] = p[0::2] * (new_w / self.width)
                p[1::2] = p[1::2] * (new_h / self.height)
                row.append(p)
            out.append(row)
        return RefPolygons(out, width, height)

    def flip(self, width, height, direction="horizontal"):
        out = []
        for ps in self.polys:
            row = []
            for p in ps:
                p = p.copy()
                if direction in ("horizontal", "diagonal"):
                    p[0::2] = width - p[0::2]
                if direction in ("vertical", "diagonal"):
                    p[1::2] = height - p[1::2]
                row.append(p)
            out.append(row)
        return RefPolygons(out, width, height)

    def _shift(self, axis, offset, limit):
        for ps in self.polys:
            for p in ps:
                p[axis::2] = np.clip(p[axis::2] + offset, 0, limit)

    def translate(self, dx, dy, width, height):
        out = RefPolygons(self.polys, width, height)  # (copies the arrays)
        out._shift(0, dx, width)
        out._shift(1, dy, height)
        return out

    def crop(self, x0, y0, width, height):
        from shapely import geometry
        x1, x2 = np.clip([x0, x0 + width], 0, self.width)
        y1, y2 = np.clip([y0, y0 + height], 0, self.height)
        box = geometry.box(x1, y1, x2, y2).buffer(0.0)
        out = []
        for ps in self.polys:
            row = []
            for p in ps:
                poly = geometry.Polygon(p.reshape(-1, 2)).buffer(0.0)
                if not poly.is_valid:
                    continue
                cut = poly.intersection(box)
                if cut.is_empty:
                    continue
                multi = isinstance(cut, geometry.base.BaseMultipartGeometry)
                for part in (cut.geoms if multi else [cut]):
                    if not isinstance(part, geometry.Polygon) or not part.is_valid:
                        continue
                    c = np.asarray(part.exterior.coords)[:-1].copy()
                    c[:, 0] -= x1
                    c[:, 1] -= y1
                    row.append(c.reshape(-1))
            out.append(row or [np.zeros(6)])
        return RefPolygons(out, max(int(x2 - x1), 1), max(int(y2 - y1), 1))

    def rotate(self, angle, width, height):
        raise NotImplementedError

    def blank(self, n, width, height):
        return RefPolygons([[np.zeros(6)] for _ in range(n)], width, height)

    @classmethod
    def concat(cls, parts):
        return cls([ps for p in parts for ps in p.polys], parts[0].width, parts[0].height)

    def boxes(self):
        # HorizontalBoxes.from_instance_masks: min / max over the vertices in float32, starting
        # from (2 w, 2 h) and (0, 0)
        out = np.zeros((len(self.polys), 4), np.float32)
        for i, ps in enumerate(self.polys):
            xy = np.concatenate(ps).reshape(-1, 2).astype(np.float32)
            out[i] = np.concatenate([np.minimum(xy.min(0), np.float32([self.width * 2, self.height * 2])),
                                     np.maximum(xy.max(0), 0)])
        return out

    def as_array(self, step=1):
        from pycocotools import mask as mask_utils
        full = np.zeros((len(self.polys), self.height, self.width), np.uint8)
        for i, ps in enumerate(self.polys):
            rles = mask_utils.frPyObjects([p.copy() for p in ps], self.height, self.width)
            full[i] = mask_utils.decode(mask_utils.merge(rles))
        return full[:, step // 2::step, step // 2::step]


def same_pipeline_samples(pipe, make, kinds, draws, seed, check) -> int:
    """Run ``pipe`` (a fresh copy per kind, the same seed) on ``draws`` samples from
    ``make(rng, kind)`` for each of the two target ``kinds``; the outputs must agree sample by
    sample (both dropped, or the same image, boxes and labels, then ``check(a, b)`` on the pair).
    Returns how many instances the kept samples held."""
    import copy
    outs = []
    for kind in kinds:
        rng, p = np.random.default_rng(seed), copy.deepcopy(pipe)
        outs.append([p(make(rng, kind), rng) for _ in range(draws)])
    kept = 0
    for a, b in zip(*outs, strict=True):
        assert (a is None) == (b is None)
        if a is None:
            continue
        kept += len(a.boxes)
        np.testing.assert_array_equal(a.img, b.img)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
        check(a, b)
    return kept


def assert_same_polygons(a, b) -> None:
    """Two polygon targets hold the same polygons, instance by instance, to the bit."""
    for pa, pb in zip(a.polys, b.polys, strict=True):
        assert len(pa) == len(pb)
        for qa, qb in zip(pa, pb):
            np.testing.assert_array_equal(qa, qb)
