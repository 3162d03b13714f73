"""Host values -> device tensors without waiting for the device.

`torch.tensor(values, device="cuda")` (and indexing a CUDA tensor with a Python list, which makes
one) copies from pageable memory with a blocking copy, and a blocking copy first waits for every
kernel queued on the stream: a host sync hidden in the middle of a run of launches, which the
reads that the post-processing counts (`rtmdet.deploy.bench.OpCounter`) do not show. `upload`
goes through pinned memory and an asynchronous copy instead; PyTorch's pinned-memory cache keeps
the host block until the copy has run."""
from __future__ import annotations

import torch


def upload(values, dtype: torch.dtype | None = torch.long, device=None) -> torch.Tensor:
    """`values` (a list, a scalar or a CPU tensor) as a tensor of `dtype` (None: as given or
    inferred) on `device`, queued on the current stream without waiting for it (CUDA); elsewhere
    a plain tensor."""
    if isinstance(values, torch.Tensor):
        host = values if dtype is None else values.to(dtype)
    else:
        host = torch.tensor(values, dtype=dtype)
    kind = "cpu" if device is None else torch.device(device).type
    if kind == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True) if kind == "cuda" else host.to(device)


def rows_index(rows: list[int], device) -> torch.Tensor | slice:
    """Rows of a batch as an index: a slice where they are contiguous (nothing to upload),
    otherwise an uploaded index tensor."""
    if rows and rows == list(range(rows[0], rows[-1] + 1)):
        return slice(rows[0], rows[-1] + 1)
    return upload(rows, device=device)
