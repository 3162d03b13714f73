"""The PyTorch model as an inference backend."""
from __future__ import annotations

import torch

from .backend import Backend
from .loop import letterbox_input


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model):
        self.model = model.eval()
        self.family = model.family
        self.model_cfg = model.cfg
        self.class_names = list(model.class_names)
        self.test_cfg = model.test_cfg

    def __repr__(self) -> str:
        return f"TorchBackend({type(self.model).__name__})"

    def preprocess(self, images, size):
        arr, metas = letterbox_input(images, size)
        return self.model.normalize(torch.from_numpy(arr).to(self.model.device)), metas

    @torch.inference_mode()
    def infer(self, x) -> dict:
        out = self.model.decode(self.model(x), tuple(x.shape[-2:]))
        if x.is_cuda:
            torch.cuda.synchronize()
        return out

    @torch.inference_mode()
    def postprocess(self, outs, metas, cfg):
        return super().postprocess(outs, metas, cfg)
