"""What every inference backend provides to the loop (`rtmdet.inference.loop`)."""
from __future__ import annotations

from typing import Sequence

from ..config import ModelConfig, TestConfig
from ..detections import Detections
from ..families import TaskFamily


class BackendUnavailable(RuntimeError):
    """A backend's runtime (package or device) is missing."""


class Backend:
    """Runs the network (with decoding, and NMS for graphs exported with it) on a batch.

    Subclasses set the attributes in `__init__` and implement `preprocess` and `infer`;
    post-processing is the task family's, the same for every backend."""

    name = "?"
    family: TaskFamily
    model_cfg: ModelConfig
    class_names: list[str]
    test_cfg: TestConfig
    fixed_size: tuple[int, int] | None = None  # static-shape graphs
    fixed_batch: int | None = None
    has_nms: bool = False  # the graph already ran the NMS
    accelerated: bool = False  # the network runs on a GPU: the host is free to read ahead
    # a CUDA device where `run_inference` may post-process one batch on a side stream while the
    # next batch's network runs (`infer_async` queues without waiting); None: one batch at a time
    overlap_device = None

    def input_size(self, imgsz=None) -> tuple[int, int]:
        from .loop import input_size
        if imgsz is None:
            return self.fixed_size or input_size(self.test_cfg.imgsz)
        size = input_size(imgsz)
        if self.fixed_size and tuple(self.fixed_size) != size:
            raise ValueError(f"{self} was exported for {self.fixed_size[0]}x{self.fixed_size[1]} "
                             f"input, not {size[0]}x{size[1]} (export with --dynamic for other sizes)")
        return size

    def preprocess(self, images, size):
        raise NotImplementedError

    # reading ahead (`run_inference`) splits `preprocess`: the host part runs on a worker
    # thread and must not touch a GPU (a CUDA call from another thread breaks a graph capture);
    # the device part runs in the caller's thread. Graph backends letterbox with numpy only.
    def preprocess_host(self, images, size):
        return self.preprocess(images, size)

    def preprocess_device(self, prepared):
        return prepared

    def infer(self, x) -> dict:
        raise NotImplementedError

    def infer_async(self, x) -> dict:
        """`infer` that may return before the device has finished (the outputs are read on the
        device's stream order)."""
        return self.infer(x)

    def check_cfg(self, cfg: TestConfig) -> None:
        """Refuse settings a graph with NMS inside cannot honour."""

    def postprocess(self, outs: dict, metas: Sequence, cfg: TestConfig) -> list[Detections]:
        self.check_cfg(cfg)
        post = self.family.postprocess_nms if self.has_nms else self.family.postprocess
        return post(outs, list(metas), cfg, self.model_cfg, self.class_names)
