"""INT8 post-training quantization of exported graphs: ONNX Runtime static QDQ and OpenVINO (NNCF).

Both calibrate on letterboxed images from a user folder (a COCO / YOLO dataset as
`rtmdet.data.load_dataset` reads it, or any folder of images), pre-processed exactly as the
deployed graph sees them (`letterbox_batch`: raw BGR 0..255, pad 114; normalization is in the
graph). Input and outputs stay float32, so the INT8 files run through `Detector` unchanged.

What stays in float (`keep_float`):
* "post": everything outside the network: the input normalization, and the box decode, NMS and
  mask assembly that follow the head (pixel coordinates up to the image size do not fit 8 bits:
  a 640-pixel range in 256 steps is 2.5 px per step).
* "head" (default): "post" plus the final 1x1 prediction convs (`rtm_cls`, `rtm_reg`,
  `rtm_kernel`, the mask branch's `projection`) and what follows them; their outputs are the
  logits and distances themselves, whose rounding moves scores and boxes directly.
* "none": quantize whatever the quantizer would (for measurements).
`benchmarks/bench_cpu_deploy.py --exclusions` measures the three on the same model.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

KEEP_FLOAT = ("head", "post", "none")
# the final prediction convs of RTMDet(-Ins): what they output are logits / distances / kernels
PRED_CONV = re.compile(r"/(rtm_cls|rtm_reg|rtm_kernel)\.\d+/|/mask_head/projection/")
NETWORK = "/model/"  # every node of the exported network proper is named /model/...


# ------------------------------------------------------------------------------- calibration
def calibration_images(data: str | os.PathLike, n: int | None = None, split: str = "train",
                       seed: int = 0) -> list[str]:
    """Image paths to calibrate on: a dataset `load_dataset` reads (its `split`, else all its
    images), or every image under a folder. More than `n` -> a seeded random sample of `n`
    (sorted file lists often run scene by scene)."""
    from ..data.datasets import load_dataset
    from ..data.files import list_images

    p = Path(data)
    if not p.exists():
        raise FileNotFoundError(f"calibration data not found: {p}")
    paths: list[str] = []
    try:
        ds = load_dataset(p, split=split)
        paths = [ds.image_path(r) for r in ds.records]
    except (ValueError, FileNotFoundError, KeyError):
        paths = []
    if not paths:
        if p.is_file() and p.suffix.lower() in (".json", ".yaml", ".yml"):
            p = p.parent
        paths = [str(x) for x in list_images(str(p))]
    if not paths:
        raise ValueError(f"{data}: no images to calibrate on")
    if n is not None and 0 < n < len(paths):
        idx = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
        paths = [paths[i] for i in idx]
    return paths


def calibration_batches(paths: Iterable[str], size: tuple[int, int],
                        batch: int = 1) -> Iterator[np.ndarray]:
    """(batch,3,H,W) float32 raw-BGR letterboxed inputs, as `Detector` feeds the graph; a last
    short batch is padded with copies of its last image (static-batch graphs)."""
    from ..data.letterbox import letterbox_batch
    from ..data.images import read_image

    paths = list(paths)
    for i in range(0, len(paths), batch):
        imgs = [read_image(p) for p in paths[i:i + batch]]
        imgs += imgs[-1:] * (batch - len(imgs))
        yield letterbox_batch(imgs, size)[0].astype(np.float32)


def _calib_shape(meta: dict, imgsz) -> tuple[tuple[int, int], int]:
    size = meta.get("imgsz", [640, 640]) if imgsz is None else imgsz
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = 1 if meta.get("dynamic") else int(meta.get("batch", 1))
    return (int(size[0]), int(size[1])), batch


# ------------------------------------------------------------------------------- float scope
def _float_nodes(nodes, keep_float: str) -> list[str]:
    """Names of the nodes to keep in float. `nodes`: (name, input ids, output ids) per node in
    topological order; the result is the nodes outside the network, and the consumers (direct
    or not) of the prediction convs' outputs, plus those convs themselves for "head"."""
    if keep_float not in KEEP_FLOAT:
        raise ValueError(f"keep_float={keep_float!r}: one of {KEEP_FLOAT}")
    if keep_float == "none":
        return []
    tainted: set = set()
    keep = []
    for name, ins, outs in nodes:
        pred = bool(PRED_CONV.search(name)) and NETWORK in name
        downstream = any(i in tainted for i in ins)
        if pred or downstream:
            tainted.update(outs)
        if not name.startswith(NETWORK) or downstream or (pred and keep_float == "head"):
            keep.append(name)
    return keep


def onnx_float_nodes(proto, keep_float: str = "head") -> list[str]:
    """`_float_nodes` over an ONNX graph (node names as `export_onnx` writes them)."""
    return _float_nodes(((n.name, list(n.input), list(n.output)) for n in proto.graph.node),
                        keep_float)


def ov_float_nodes(model, keep_float: str = "head") -> list[str]:
    """`_float_nodes` over an `openvino.Model` (friendly names follow the ONNX node names; a
    conv with bias becomes `<name>/WithoutBiases` + `<name>`, both matched)."""
    def ports(op):
        for inp in op.inputs():
            src = inp.get_source_output()
            yield (src.get_node().get_friendly_name(), src.get_index())

    nodes = ((op.get_friendly_name(), list(ports(op)),
              [(op.get_friendly_name(), i) for i in range(op.get_output_size())])
             for op in model.get_ordered_ops())
    return _float_nodes(nodes, keep_float)


# ------------------------------------------------------------------------------- ONNX Runtime
def quantize_onnx(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike,
                  data: str | os.PathLike, calib: int = 100, keep_float: str = "head",
                  imgsz=None, method: str = "minmax", per_channel: bool = True,
                  split: str = "train") -> Path:
    """ONNX Runtime static INT8 quantization (QDQ format, uint8 activations / int8 per-channel
    weights: the fast kernels on x86 with VNNI and on ARM) of an `export_onnx` file, calibrated
    on `calib` images of `data`. The rtmdet metadata is kept (plus `int8` details).

    `method`: activation ranges from "minmax" (default), "percentile" (99.999th) or "entropy".
    On the 640 fixture model calibrated on 32 shapes images "percentile" kept 58% of fp32's top
    detections against 34% for "minmax" (3.5x slower to calibrate), but onnxruntime 1.32's
    histogram calibrator fails on some graphs ("Too many bins for data range"), so it is opt-in."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    from .onnx import META_KEY, read_metadata

    meta = read_metadata(onnx_in)
    if not meta:
        raise ValueError(f"{onnx_in}: no rtmdet metadata; export it with `rtmdet export`")
    if meta.get("half"):
        raise ValueError(f"{onnx_in}: a float16 export cannot be INT8-quantized; export fp32")
    size, batch = _calib_shape(meta, imgsz)
    paths = calibration_images(data, calib, split=split)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = ({"images": x} for x in calibration_batches(paths, size, batch))

        def get_next(self):
            return next(self.it, None)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    onnx_out = Path(onnx_out)
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pre.onnx"
        try:  # shape inference + graph optimizations the quantizer expects
            from onnxruntime.quantization.shape_inference import quant_pre_process
            quant_pre_process(str(onnx_in), str(src), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - quantizing the file as it is still works
            src = Path(onnx_in)
        proto = onnx.load(str(src))
        exclude = onnx_float_nodes(proto, keep_float)
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print
            quantize_static(str(src), str(onnx_out), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                            calibrate_method=methods[method],
                            extra_options={"WeightSymmetric": True,
                                           "ActivationSymmetric": False},
                            calibration_providers=["CPUExecutionProvider"])
    out = onnx.load(str(onnx_out))
    meta["int8"] = {"tool": "onnxruntime", "calib_images": len(paths), "keep_float": keep_float,
                    "method": method, "per_channel": per_channel}
    del out.metadata_props[:]
    entry = out.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(out, str(onnx_out))
    return onnx_out


# ------------------------------------------------------------------------------- OpenVINO/NNCF
def quantize_openvino(src: str | os.PathLike, out_xml: str | os.PathLike,
                      data: str | os.PathLike, calib: int = 100, keep_float: str = "head",
                      imgsz=None, preset: str = "performance", fast_bias_correction: bool = True,
                      split: str = "train") -> Path:
    """OpenVINO INT8 via `nncf.quantize` (post-training, symmetric "performance" preset or
    "mixed"): `src` is an fp32 IR from `export_openvino` or an `export_onnx` file; the result
    is an IR with the rtmdet metadata (plus `int8` details)."""
    try:
        import nncf
    except ImportError:
        from ..inference import BackendUnavailable
        raise BackendUnavailable("nncf is not installed (pip install nncf, or "
                                 "pip install 'rtmdet[openvino]')") from None
    from ..inference.openvino_backend import import_openvino, read_ov_metadata
    from .openvino import write_ov_model

    ov = import_openvino()
    src = Path(src)
    model = ov.Core().read_model(str(src)) if src.suffix == ".xml" else ov.convert_model(str(src))
    meta = read_ov_metadata(model)
    if not meta:
        from .onnx import read_metadata
        meta = read_metadata(src) if src.suffix == ".onnx" else {}
    if not meta:
        raise ValueError(f"{src}: no rtmdet metadata; export it with `rtmdet export`")
    size, batch = _calib_shape(meta, imgsz)
    paths = calibration_images(data, calib, split=split)
    inputs = list(calibration_batches(paths, size, batch))
    ignored = ov_float_nodes(model, keep_float)
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE,
               "mixed": nncf.QuantizationPreset.MIXED}
    from nncf.common.logging import nncf_logger
    level = nncf_logger.level
    nncf.set_log_level(logging.WARNING)  # not a line per node kept in float
    try:
        qmodel = nncf.quantize(model, nncf.Dataset(inputs), preset=presets[preset],
                               target_device=nncf.TargetDevice.CPU, subset_size=len(inputs),
                               fast_bias_correction=fast_bias_correction,
                               ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
    finally:
        nncf.set_log_level(level)
    meta["int8"] = {"tool": "nncf", "calib_images": len(paths), "keep_float": keep_float,
                    "preset": preset}
    meta.pop("openvino_half", None)
    return write_ov_model(qmodel, out_xml, meta)
