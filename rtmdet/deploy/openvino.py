"""OpenVINO: convert our ONNX export to an OpenVINO IR (.xml + .bin) and run it behind `Detector`.

Design choices
--------------
* The IR is converted from the ONNX export (`export_onnx`), not traced from PyTorch again, so the
  graph (normalization inside, decode, optional NMS, mask outputs) is exactly the one the ONNX
  Runtime backend runs and the graph backends post-process. OpenVINO's ONNX frontend maps
  `NonMaxSuppression` to its own NMS op, so in-graph NMS works for static and dynamic shapes.
* Metadata: the `rtmdet` JSON the ONNX file carries goes into the IR's `rt_info` under the
  `rtmdet` key. It is written into the .xml itself, so the .xml/.bin pair is self-contained like an
  ONNX file (a sidecar .json, as TensorRT engines need, can get lost or go stale), `read_model`
  hands it back without extra files, and `nncf.quantize` / `save_model` keep it.
* `save_model` compresses weights to float16 by default; we keep float32 unless `half=True`
  (OpenVINO's CPU plugin decompresses f16 weights and computes in f32 or bf16 either way).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..inference.graph_backend import META_KEY
from ..inference.openvino_backend import import_openvino

__all__ = ["export_openvino", "write_ov_model"]


def export_openvino(src, out_xml: str | os.PathLike, half: bool = False,
                    **onnx_kwargs) -> Path:
    """Write an OpenVINO IR (`out_xml` and the .bin next to it) and return the .xml path.

    `src`: an ONNX file from `export_onnx` / `rtmdet export` (or an `onnx.ModelProto` of one), or
    an RTMDet model, which is first exported with `export_onnx(model, ..., **onnx_kwargs)`
    (imgsz, batch, dynamic, nms, score_thr, ...). Static/dynamic shapes and in-graph NMS are the
    ONNX graph's. `half`: store float16 weights (half the file; computation is unchanged)."""
    ov = import_openvino()
    out_xml = Path(out_xml)
    if out_xml.suffix != ".xml":
        raise ValueError(f"{out_xml}: an OpenVINO IR path must end in .xml")
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(src, (str, os.PathLike)):
            if onnx_kwargs:
                raise TypeError(f"export options {sorted(onnx_kwargs)} only apply to a model")
            onnx_path = Path(src)
        elif hasattr(src, "graph"):  # onnx.ModelProto
            import onnx
            onnx_path = Path(tmp) / "model.onnx"
            onnx.save(src, str(onnx_path))
        else:  # an RTMDet nn.Module
            from .onnx import export_onnx
            onnx_path = export_onnx(src, Path(tmp) / "model.onnx", **onnx_kwargs)
        from .onnx import read_metadata
        meta = read_metadata(onnx_path)
        if not meta:
            raise ValueError(f"{onnx_path}: no rtmdet metadata; export it with `rtmdet export`")
        model = ov.convert_model(str(onnx_path))
    write_ov_model(model, out_xml, meta, half=half)
    return out_xml


def write_ov_model(model, out_xml: str | os.PathLike, meta: dict, half: bool = False) -> Path:
    """Save an `openvino.Model` with the rtmdet metadata in its rt_info (used by quantize too)."""
    ov = import_openvino()
    meta = dict(meta, openvino_half=bool(half))
    model.set_rt_info(json.dumps(meta), [META_KEY])
    ov.save_model(model, str(out_xml), compress_to_fp16=half)
    return Path(out_xml)
