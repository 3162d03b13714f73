"""Latency of pre-processing, inference and post-processing per backend, side by side."""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..inference import BACKENDS, BackendUnavailable, Detector, resolve_test_cfg
from ..inference.loop import check_knobs


@dataclass
class BenchRow:
    backend: str
    skipped: str | None = None
    pre: list[float] = field(default_factory=list)  # seconds per run
    infer: list[float] = field(default_factory=list)
    post: list[float] = field(default_factory=list)
    batch: int = 1

    @property
    def total(self) -> list[float]:
        return [a + b + c for a, b, c in zip(self.pre, self.infer, self.post)]

    def median(self, name: str) -> float:
        return statistics.median(getattr(self, name))

    def p90(self, name: str) -> float:
        v = sorted(getattr(self, name))
        return v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]

    @property
    def throughput(self) -> float:
        return self.batch / self.median("total")


def bench_images(batch: int, shape=(480, 640), seed: int = 0) -> list[np.ndarray]:
    """Deterministic synthetic BGR images (smooth gradients plus noise)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    base = np.stack(np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), -1)
    out = []
    for _ in range(batch):
        img = np.concatenate([base, base[..., :1][..., ::-1]], -1) + rng.normal(0, 20, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


@torch.no_grad()
def calibrate_norms(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Set every BatchNorm's running mean and variance to those of its input on `x` (one
    train-mode pass, nothing else changes). Random init shrinks the features layer by layer to
    1e-9..1e-13, below what float16 holds (it flushes them to zero: every score equal again);
    calibrated, each normalised layer's output has unit scale, as in a trained network."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: after one batch, that batch's statistics
            m.train()
        model(x)
    finally:
        model.train(was_training)
        for m, (momentum, training) in zip(norms, saved):
            m.momentum = momentum
            m.train(training)
    return model


@torch.no_grad()
def spread_head(model: torch.nn.Module, x: torch.Tensor | None = None, logit=(-4.0, 2.5),
                dist=(2.5, 1.2), log_dist=(0.9, 0.7)) -> torch.nn.Module:
    """Give a randomly initialised model the output statistics of a trained one, for benchmarks.

    First the BatchNorm statistics are set from `x` (a normalised batch; default two letterboxed
    `bench_images`) so the features keep unit scale (`calibrate_norms`: plain random init shrinks
    them below float16's range); then the last classification and regression convs are rescaled
    (weights and bias only: the same arithmetic per image) so that on `x` 99.9% of the logits lie
    in `logit` = (centre, half-width), and of the distances in `dist` (in strides; `log_dist`
    before the exp of heads with `exp_on_reg`). The features are heavy-tailed (0.1% beyond 7
    standard deviations), hence a quantile rather than the standard deviation. Random init gives
    every score the same value and, without the exp, boxes of zero width that the `min_bbox_size`
    filter drops before NMS (so nothing reaches it); spread like this, most scores lie in
    (0.001, 0.3) (99.9% on `x`, 90-99.9% on other images: a random network answers each image
    differently) and boxes are about 5 strides wide, in float32, float16 and bfloat16: the
    reference settings' full load (~600000 candidates per 640x640 image for nms_pre's 30000), as
    the fixture's tiny weights give it (whose wider-spread scores make the NMS itself costlier)."""
    head = model.bbox_head
    if x is None:
        x = model.preprocess(bench_images(2, seed=1))[0]
    calibrate_norms(model, x)
    feats: dict[torch.nn.Module, torch.Tensor] = {}  # each conv's input
    hooks = [m.register_forward_hook(lambda m, i, o: feats.__setitem__(m, i[0].double()))
             for m in list(head.rtm_cls) + list(head.rtm_reg)]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    targets = [(m, logit) for m in head.rtm_cls]
    targets += [(m, log_dist if getattr(head, "exp_on_reg", False) else dist) for m in head.rtm_reg]
    for conv, (centre, half_width) in targets:
        # the weights' part of the output, from the input (in float64: the bias may be far larger)
        z = torch.nn.functional.conv2d(feats[conv], conv.weight.double())
        z_mean = z.mean(dim=(0, 2, 3))
        spread = (z - z_mean[:, None, None]).abs().flatten()
        q = float(torch.quantile(spread[:: max(1, spread.numel() // 4_000_000)], 0.999))
        scale = half_width / q if q > 0 else 0.0
        conv.weight.mul_(scale)
        conv.bias.copy_(centre - scale * z_mean.to(conv.bias))
    return model


def make_detector(backend: str, weights: str, imgsz: int, batch: int, device: str,
                  workdir: Path, nms: bool = False) -> Detector:
    from ..inference.detector import GRAPH_SUFFIXES
    kind = GRAPH_SUFFIXES.get(Path(str(weights)).suffix.lower())
    if kind is not None:  # an exported file runs on its own backend only
        if backend != kind:
            raise BackendUnavailable(f"{Path(str(weights)).name} is a {kind} file; bench the .pth "
                                     "checkpoint to compare backends")
        return Detector(weights, device=device)
    if backend == "torch":
        return Detector(weights, device=device)
    from ..api import load
    from .onnx import export_onnx
    model = load(weights, device="cpu")
    onnx_path = workdir / f"model_{imgsz}_b{batch}{'_nms' if nms else ''}.onnx"
    if backend == "tensorrt":
        from ..inference.tensorrt_backend import import_tensorrt
        import_tensorrt()  # fail fast, before exporting
        from .trt import build_engine
        export_onnx(model, onnx_path, imgsz=imgsz, batch=batch, nms=nms)
        return Detector(build_engine(onnx_path), device="cuda")
    if backend == "openvino":
        from ..inference.openvino_backend import import_openvino
        import_openvino()
        from .openvino import export_openvino
        export_onnx(model, onnx_path, imgsz=imgsz, batch=batch, nms=nms)
        return Detector(export_openvino(onnx_path, onnx_path.with_suffix(".xml")), device=device)
    export_onnx(model, onnx_path, imgsz=imgsz, batch=batch, nms=nms)
    return Detector(onnx_path, device=device)


def median_seconds(fn, runs: int) -> float:
    """Median wall time of `runs` calls of fn(), waiting for queued CUDA work inside each."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_stages(det: Detector, images, imgsz: int, cfg) -> tuple[float, float, float]:
    """Seconds of pre-processing, inference and post-processing of one batch through `det`."""
    t0 = time.perf_counter()
    x, metas = det.preprocess(images, imgsz)
    t1 = time.perf_counter()
    out = det.infer(x)
    t2 = time.perf_counter()
    det.postprocess(out, metas, cfg)
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def run_bench(weights: str, backends=BACKENDS, imgsz: int | None = None, batch: int = 1, runs: int = 20,
              warmup: int = 3, device: str = "cpu", nms: bool = False,
              images: list[np.ndarray] | None = None) -> list[BenchRow]:
    """Time each backend's three stages over `runs` runs after `warmup` runs (`imgsz`
    None: the size the checkpoint carries)."""
    check_knobs(batch_size=batch, imgsz=imgsz)
    for name, v in (("runs", runs), ("warmup", warmup)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "runs" else 0):
            raise ValueError(f"{name}={v!r}: must be {'>= 1' if name == 'runs' else '>= 0'}")
    if imgsz is None:
        imgsz = Detector(weights).test_cfg.imgsz
    images = images or bench_images(batch)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in backends:
            row = BenchRow(name, batch=batch)
            try:
                det = make_detector(name, weights, imgsz, batch, device, Path(tmp), nms)
            except (BackendUnavailable, ImportError) as e:
                row.skipped = str(e)
                rows.append(row)
                continue
            cfg = resolve_test_cfg(det.test_cfg, imgsz=imgsz)
            for i in range(warmup + runs):
                pre, infer, post = time_stages(det, images, imgsz, cfg)
                if i >= warmup:
                    row.pre.append(pre)
                    row.infer.append(infer)
                    row.post.append(post)
            rows.append(row)
    return rows


def format_table(rows: list[BenchRow], ratios: bool = False) -> str:
    """One line per backend: median / p90 milliseconds per stage, total, images per second."""
    head = ["backend", "pre ms (med/p90)", "infer ms (med/p90)", "post ms (med/p90)",
            "total ms (med/p90)", "img/s"]
    if ratios:
        head.append("speed vs torch")
    ref = next((r for r in rows if r.backend == "torch" and not r.skipped), None)
    table = [head]
    for r in rows:
        if r.skipped:
            table.append([r.backend, f"skipped: {r.skipped}"])
            continue
        cells = [r.backend] + [f"{1e3 * r.median(k):.1f} / {1e3 * r.p90(k):.1f}"
                               for k in ("pre", "infer", "post", "total")]
        cells.append(f"{r.throughput:.1f}")
        if ratios:
            cells.append(f"{ref.median('total') / r.median('total'):.2f}x" if ref else "-")
        table.append(cells)
    widths = [max(len(row[i]) for row in table if len(row) == len(head) and i < len(row))
              for i in range(len(head))]
    lines = []
    for row in table:
        if len(row) != len(head):
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


class OpCounter:
    """Counts, inside `with OpCounter() as c:`, the tensor operations that launch a kernel on a
    GPU (`c.kernels`: every ATen op except views, allocations and scalar reads) and those that
    wait for the GPU (`c.syncs`: reading a value to the host - `.item()`, `int()`, `float()`,
    `bool()`, `.tolist()`, `torch.equal` - and ops whose output size depends on the data:
    `nonzero`, indexing with a boolean mask (`x[mask]`, `x[mask] = y`: a `nonzero` inside the
    op, which a dispatch mode does not see), `repeat_interleave` without `output_size`). Run on
    the CPU it tells what a GPU would launch, without a GPU. (Host reads are counted at the
    Python methods: under inference mode a CPU tensor's `int()` skips the dispatcher.)"""

    _FREE = {"empty", "empty_strided", "empty_like", "lift_fresh", "_local_scalar_dense", "detach",
             "set_", "resize_", "scalar_tensor", "is_nonzero"}
    _SIZED_BY_DATA = {"nonzero", "nonzero_numpy", "masked_select", "unique", "_unique2", "unique_consecutive",
                      "equal"}
    _READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")

    def __init__(self):
        self.kernels = self.syncs = 0
        self.ops: dict[str, int] = {}

    @staticmethod
    def _sized_by_data(name: str, args, kwargs) -> bool:
        """Ops whose output size depends on the data only for some arguments."""
        if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
            masks = [i for i in args[1] if i is not None and i.dtype in (torch.bool, torch.uint8)]
            if name != "index" and len(masks) == len([i for i in args[1] if i is not None]) == 1:
                value, acc = args[2], (args[3] if len(args) > 3 else (kwargs or {}).get("accumulate"))
                if value.numel() == 1 and value.device.type == "cpu" and not acc:
                    return False  # `x[mask] = scalar` runs as masked_fill_: no sync
            return bool(masks)
        if name == "repeat_interleave":
            repeats = args[0] if len(args) == 1 else args[1]
            return isinstance(repeats, torch.Tensor) and (kwargs or {}).get("output_size") is None
        return False

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if name in counter._SIZED_BY_DATA or counter._sized_by_data(name, args, kwargs):
                    counter.syncs += 1
                if not (func.is_view or name in counter._FREE):
                    counter.kernels += 1
                    counter.ops[name] = counter.ops.get(name, 0) + 1
                return func(*args, **(kwargs or {}))

        def reading(method):
            def read(t, *a, **k):
                if not counter._reading:  # int() may call __index__ / item inside: count once
                    counter.syncs += 1
                counter._reading += 1
                try:
                    return method(t, *a, **k)
                finally:
                    counter._reading -= 1
            return read

        self._reading = 0
        self._saved = {name: getattr(torch.Tensor, name) for name in self._READS}
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, reading(method))
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, method)
        return False
