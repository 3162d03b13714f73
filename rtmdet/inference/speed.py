"""Inference speed options for the PyTorch backend: BatchNorm folded into the convs, fp16/bf16
with channels-last, torch.compile, CUDA-graph replay per input shape, letterbox on the device.

Everything here changes how the network runs, never what it computes beyond rounding: the drift
each option causes on the reference fixtures is measured in docs/speed.md. The defaults (all
off) are the exact reference path."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

HALF_DTYPES = {False: torch.float32, "fp32": torch.float32, True: torch.float16,
               "fp16": torch.float16, "bf16": torch.bfloat16}
PREPROCESS = ("cpu", "device")


@dataclass(frozen=True)
class SpeedOptions:
    """How the PyTorch network runs at inference.

    fuse: fold each BatchNorm into its conv (fewer kernels; outputs equal up to rounding).
    half: False (fp32), True / "fp16" (float16) or "bf16" (bfloat16) weights and activations;
        decoding and NMS stay in float32.
    channels_last: NHWC memory format. None: on with `half` on CUDA (tensor cores want it) and
        with `fuse` in float32 on the CPU (oneDNN's NHWC convolutions: 1.07-1.7x the forward on
        a 2-core CPU for every size, the fixtures' detections within the parity tolerance).
    compile: `torch.compile` the network (the first batch of each shape compiles: seconds).
    cuda_graph: capture the network (with decoding) once per input shape and replay it (CUDA
        only; removes the per-kernel launch cost that dominates small batches). The
        post-processing runs eagerly: its block-wise NMS reads back how far it got.
    preprocess: "cpu" letterboxes with OpenCV (bit-exact with the reference), "device" uploads
        the uint8 images and letterboxes on the model's device (one grey level of rounding)."""

    fuse: bool = False
    half: bool | str = False
    channels_last: bool | None = None
    compile: bool = False
    cuda_graph: bool = False
    preprocess: str = "cpu"

    def __post_init__(self):
        if not isinstance(self.half, (bool, str)) or self.half not in HALF_DTYPES:
            raise ValueError(f"half={self.half!r}: must be False, True, 'fp16' or 'bf16'")
        if self.preprocess not in PREPROCESS:
            raise ValueError(f"preprocess={self.preprocess!r}: must be one of {', '.join(PREPROCESS)}")
        for k in ("fuse", "compile", "cuda_graph"):
            if not isinstance(getattr(self, k), bool):
                raise ValueError(f"{k}={getattr(self, k)!r}: must be true or false")

    @property
    def dtype(self) -> torch.dtype:
        return HALF_DTYPES[self.half]

    def use_channels_last(self, device: torch.device) -> bool:
        if self.channels_last is None:
            if device.type == "cpu":
                return self.fuse and self.dtype == torch.float32
            return self.dtype != torch.float32 and device.type == "cuda"
        return bool(self.channels_last)

    @property
    def changes_network(self) -> bool:
        return (self.fuse or self.dtype != torch.float32 or bool(self.channels_last)
                or self.compile or self.cuda_graph)

    def describe(self) -> str:
        on = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
              if getattr(self, f.name) != f.default]
        return ", ".join(on) or "exact"


def map_tensors(fn, out):
    """`fn` on every tensor of a head output or decoded dict (nested lists/tuples/dicts/
    dataclasses)."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if dataclasses.is_dataclass(out):
        return dataclasses.replace(out, **{f.name: map_tensors(fn, getattr(out, f.name))
                                           for f in dataclasses.fields(out)})
    if isinstance(out, dict):
        return {k: map_tensors(fn, v) for k, v in out.items()}
    return type(out)(map_tensors(fn, o) for o in out)


def each_tensor(fn, obj) -> None:
    """`fn(t)` for every tensor in a head output, decoded dict or `Detections`, rebuilding
    nothing (unlike `map_tensors`) and passing over other leaves (class names, shapes)."""
    if isinstance(obj, torch.Tensor):
        fn(obj)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            each_tensor(fn, getattr(obj, f.name))
    elif isinstance(obj, dict):
        for v in obj.values():
            each_tensor(fn, v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            each_tensor(fn, v)


class Network:
    """The prepared network as a function: normalized float32 batch -> float32 head outputs."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype, channels_last: bool,
                 compile: bool = False):
        self.module = module
        self.dtype, self.channels_last = dtype, channels_last
        self.forward = torch.compile(module, dynamic=False) if compile else module

    def __call__(self, x: torch.Tensor):
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.forward(x)
        return map_tensors(lambda t: t.float(), out) if self.dtype != torch.float32 else out


class CudaGraphNetwork:
    """Replays one captured CUDA graph per input shape; outputs are copied out of the graph's
    static buffers so the next replay cannot overwrite what the caller holds. `fn` takes one or
    more tensors."""

    MAX_GRAPHS = 8

    def __init__(self, fn):
        self.fn = fn
        self.graphs: dict = {}

    def _capture(self, xs):
        static_in = tuple(x.clone() for x in xs)
        device = xs[0].device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph (cuDNN picks its algorithms here)
                self.fn(*static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(*static_in)
        if len(self.graphs) >= self.MAX_GRAPHS:
            self.graphs.pop(next(iter(self.graphs)))
        return graph, static_in, static_out

    def __call__(self, *xs: torch.Tensor):
        key = tuple((tuple(x.shape), x.dtype, x.device) for x in xs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(xs)
        graph, static_in, static_out = self.graphs[key]
        for s, x in zip(static_in, xs):
            s.copy_(x)
        graph.replay()
        return map_tensors(torch.clone, static_out)


def _versions(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is modified in place (an optimizer step,
    `load_state_dict`), so a cached prepared copy is never stale."""
    return tuple(t._version for t in (*model.parameters(), *model.buffers())) + (model.device,)


class Prepared:
    """What `prepare` builds for one model and one set of options: the network function, and
    with `cuda_graph` the graphs of the network alone and of network + decoding."""

    def __init__(self, net: Network, model: torch.nn.Module, cuda_graph: bool):
        self.net = net
        decode = model.decode  # reads only the config and shapes: safe to capture in a graph

        def infer(x):
            return decode(net(x), tuple(x.shape[-2:]))
        self.network = CudaGraphNetwork(net) if cuda_graph else net
        self.infer = CudaGraphNetwork(infer) if cuda_graph else infer


def prepare(model: torch.nn.Module, options: SpeedOptions, owned: bool = False) -> Prepared:
    """The network of `model` run as `options` say: a prepared copy (cached on the model and
    rebuilt when its weights change), or the model itself prepared in place when `owned`."""
    device = model.device
    if options.cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs the model on a CUDA device, not {device}")
    cache = model.__dict__.get("_speed_cache")
    if cache is not None and cache[0] == (options, _versions(model)):
        return cache[1]
    model.__dict__.pop("_speed_cache", None)
    net = model if owned else copy.deepcopy(model)
    net.eval()
    if options.fuse:
        net.fuse()
    dtype = options.dtype
    if dtype != torch.float32:
        net.to(dtype)
        for name in ("mean", "std"):  # the normalization constants stay exact
            if isinstance(getattr(net, name, None), torch.Tensor):
                setattr(net, name, getattr(net, name).float())
    channels_last = options.use_channels_last(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    prepared = Prepared(Network(net, dtype, channels_last, options.compile), model, options.cuda_graph)
    model.__dict__["_speed_cache"] = ((options, _versions(model)), prepared)
    return prepared


def prepare_network(model: torch.nn.Module, options: SpeedOptions, owned: bool = False):
    """`model`'s network as a function of the normalized batch, run as `options` say (the model
    itself when they change nothing)."""
    if not options.changes_network:
        return model
    return prepare(model, options, owned).network
