"""The PyTorch model as an inference backend, with the speed options of `rtmdet.inference.speed`."""
from __future__ import annotations

import torch

from .backend import Backend
from ..data.letterbox import letterbox_batch
from .speed import SpeedOptions, prepare


class TorchBackend(Backend):
    """`model` runs as given unless `options` ask for more (fused BN, fp16/bf16, channels-last,
    torch.compile, CUDA graphs, letterbox on the device); then a prepared copy runs (`owned=True`:
    the model itself is changed, for models nobody else holds, e.g. loaded from a path)."""

    name = "torch"

    def __init__(self, model, options: SpeedOptions | None = None, owned: bool = False):
        self.model = model.eval()
        self.options = options or SpeedOptions()
        if self.options.changes_network:
            prepared = prepare(model, self.options, owned)
            self.net, self._infer = prepared.network, prepared.infer  # cuda_graph: decode inside
        else:
            self.net = model
            self._infer = lambda x: model.decode(model(x), tuple(x.shape[-2:]))
        self.family = model.family
        self.model_cfg = model.cfg
        self.class_names = list(model.class_names)
        self.test_cfg = model.test_cfg

    @property
    def accelerated(self) -> bool:
        return self.model.device.type != "cpu"

    def __repr__(self) -> str:
        return f"TorchBackend({type(self.model).__name__}, {self.options.describe()})"

    def preprocess(self, images, size):
        return self.preprocess_device(self.preprocess_host(images, size))

    def _pinned_pool(self):
        """Pinned buffers the host half writes the batch into (CUDA models; `inference.pinned`)."""
        if self.model.device.type != "cuda":
            return None
        if getattr(self, "_pool", None) is None:
            from .pinned import PinnedPool
            self._pool = PinnedPool(self.model.device)
        return self._pool

    def preprocess_host(self, images, size):
        """The host half (any thread, no CUDA call): letterbox (or, with the letterbox on the
        device, stack) the batch into a pinned buffer where the pool has one free."""
        pool = self._pinned_pool()
        device_pre = self.options.preprocess == "device"  # stacked here, letterboxed on the device
        nbytes = sum(img.nbytes for img in images) if device_pre else len(images) * 3 * size[0] * size[1]
        buf = pool.take(nbytes) if pool else None
        try:
            if device_pre:
                from ..data.letterbox import stack_by_shape
                return stack_by_shape(images, size, None if buf is None else buf.numpy()), len(images), size, buf
            from .pinned import batch_view
            arr, metas = letterbox_batch(images, size, out=batch_view(buf, (len(images), 3, *size)))
            return arr, metas, buf
        except BaseException:
            if pool:
                pool.put_back(buf)  # a bad image fails this batch, not the pool
            raise

    def preprocess_device(self, prepared):
        """The device half (the driving thread): upload (asynchronous from a pinned buffer),
        letterbox there if asked, normalize."""
        device = self.model.device
        if self.options.preprocess == "device":
            from ..data.letterbox import letterbox_stacked_torch
            (stacked, metas), count, size, buf = prepared
            batch = letterbox_stacked_torch(stacked, count, size, device)
        else:
            arr, metas, buf = prepared
            batch = torch.from_numpy(arr).to(device, non_blocking=True)
        pool = self._pinned_pool()
        if pool is not None:
            pool.uploaded(buf)
        return self.model.normalize(batch), metas

    @property
    def overlap_device(self):
        device = self.model.device
        return device if device.type == "cuda" else None

    @torch.inference_mode()
    def infer(self, x) -> dict:
        """The outputs, computed: waits for the GPU (stage timings rely on it; the inference loop
        uses `infer_async`, whose results are read in stream order)."""
        out = self._infer(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        return out

    @torch.inference_mode()
    def infer_async(self, x) -> dict:
        return self._infer(x)
