"""`TaskFamily`: everything that differs between detection, instance segmentation and rotated
detection, behind one interface. Code outside `rtmdet.families` never asks which task it runs:
it asks the family (`model.family`, `backend.family`, `get_family(cfg.family)`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

if TYPE_CHECKING:  # type hints only: keeps `import rtmdet` light
    from pathlib import Path

    from torch import nn

    from ..config import ModelConfig, TestConfig
    from ..data.letterbox import ImageMeta
    from ..detections import Detections


def targets_on(tensors: Sequence[torch.Tensor], device) -> list[torch.Tensor]:
    """Per-image training targets on `device`. Asynchronous copies: from the loader's pinned
    memory (`pin_memory=True` on CUDA) a blocking copy would first wait for the forward queued
    before it, and the host could not queue the loss meanwhile."""
    return [t.to(device, non_blocking=True) for t in tensors]


class TaskFamily:
    """One task family. Subclasses set the class attributes and implement the methods.

    The data flow it owns:
      head outputs --decode--> named batched tensors (the same function traces into ONNX)
                   --postprocess--> `Detections` per image (or `postprocess_nms` after in-graph NMS)
      head outputs + targets --loss--> {part: scalar}
      per-image results --evaluate / val_metrics--> metrics
    """

    name: str = ""
    loss_keys: tuple[str, ...] = ()  # loss parts logged per epoch (before the total "loss")
    metric_keys: tuple[str, ...] = ()  # validation metrics logged per epoch
    targets: tuple[str, ...] = ()  # per-instance training targets besides boxes and labels
    # targets the loss reads only on a coarser grid: the loader returns them sampled there
    # (`TrainDataset(target_steps=...)`), the loss accepts them so
    target_steps: tuple[tuple[str, int], ...] = ()
    dataset_kind: str = "boxes"  # what `data.datasets.load_dataset(kind=...)` reads for training
    outputs: tuple[str, ...] = ()  # decoded graph outputs without NMS
    nms_outputs: tuple[str, ...] = ()  # graph outputs with NMS in the graph

    # ------------------------------------------------------------------ model
    def build_head(self, cfg: "ModelConfig", bn: Mapping[str, Any]) -> "nn.Module":
        raise NotImplementedError

    def owns(self, state_dict: Mapping[str, torch.Tensor]) -> bool:
        """Whether a checkpoint's keys are this family's (used to rebuild a model from a file)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ inference
    def decode(self, head_out, input_hw, cfg: "ModelConfig") -> dict[str, torch.Tensor]:
        """Raw head outputs of a (B,3,H,W) input -> named decoded tensors (trace-friendly)."""
        raise NotImplementedError

    def postprocess(self, outs: Mapping[str, torch.Tensor], metas: Sequence["ImageMeta"],
                    test_cfg: "TestConfig", cfg: "ModelConfig",
                    class_names: Sequence[str]) -> list["Detections"]:
        """Decoded outputs (`outputs`) -> one `Detections` per image, in original pixels."""
        raise NotImplementedError

    def postprocess_nms(self, outs: Mapping[str, torch.Tensor], metas: Sequence["ImageMeta"],
                        test_cfg: "TestConfig", cfg: "ModelConfig",
                        class_names: Sequence[str]) -> list["Detections"]:
        """Outputs of a graph with NMS inside (`nms_outputs`) -> `Detections` per image."""
        raise NotImplementedError

    def merge(self, dets: Sequence["Detections"], offsets, image_shape: tuple[int, int],
              test_cfg: "TestConfig") -> "Detections":
        """Tiled inference: the detections of each patch (patch pixels) and the patches' (x, y)
        origins in the image -> one `Detections` of the whole `image_shape` (h, w) image:
        shifted back, merged with the family's NMS at `test_cfg.nms_iou`, the best
        `test_cfg.max_per_img` kept (score descending)."""
        raise NotImplementedError

    def export_nms(self, decoded: dict[str, torch.Tensor], cfg: "ModelConfig", knobs: dict):
        """The in-graph NMS part of an export: decoded tensors -> `nms_outputs` in order."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def loss(self, head_out, batch: dict, img_shape, cfg: "ModelConfig",
             device: torch.device) -> dict[str, torch.Tensor]:
        """{part: scalar} for `loss_keys`; their sum is the objective."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def result_record(self, image_id: int, det: "Detections") -> dict:
        """What evaluation keeps of one image's detections (numpy, masks encoded)."""
        raise NotImplementedError

    def empty_record(self, image_id: int) -> dict:
        """The record of an image that could not be read (scored as no detections)."""
        raise NotImplementedError

    def evaluate(self, dataset, results: list[dict]) -> dict[str, dict]:
        """Full metrics by kind (e.g. {"bbox": ..., "segm": ...}) for `rtmdet val`."""
        raise NotImplementedError

    def format_metrics(self, metrics: dict[str, dict], class_names: Sequence[str]) -> str:
        """`evaluate`'s result as the text `rtmdet val` prints (tables per class)."""
        raise NotImplementedError

    def save_results(self, dataset, results: list[dict], save_dir) -> "Path":
        """Write `rtmdet val --save-json`'s detection file into `save_dir`; returns its path."""
        raise NotImplementedError

    def save_plots(self, metrics: dict[str, dict], dataset, results: list[dict], save_dir) -> list:
        """`rtmdet val --plots`: the plot files written into `save_dir` (none by default)."""
        return []

    def summary(self, metrics: dict[str, dict]) -> dict[str, float]:
        """`metric_keys` from `evaluate`'s result (logged per epoch, results.csv columns)."""
        raise NotImplementedError

    def fitness(self, summary: Mapping[str, float]) -> float:
        """What best.pth maximises; -1 without metrics."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<task family {self.name}>"
