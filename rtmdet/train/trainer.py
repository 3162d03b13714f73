"""The training loop: data -> model -> RTMDet loss -> AdamW, with EMA, AMP, accumulation, DDP,
logging, atomic checkpoints and exact resume."""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import difflib
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from ..api import checkpoint_meta, create
from ..checkpoint import atomic_save, extract_state_dict, safe_load
from ..config import from_dict, save_yaml, to_dict
from ..families import TaskFamily, get_family
from ..presets import get_record
from ..atomic import WriteError, write_text
from .config import TrainConfig, validate
from .ema import ExpMomentumEMA
from .interrupt import StopFlag, TrainingInterrupted, stop_on_signals
from .schedule import RTMDetLRScheduler, build_optimizer, scaled_lr, warmup_steps
from .step import autocast_dtype, backward_step, forward_loss, grad_scaler
from .step import float_outputs  # noqa: F401  (its home before step.py)

log = logging.getLogger("rtmdet.train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


class OutOfMemory(RuntimeError):
    """The GPU ran out of memory; the message says where, what to lower, and what was kept."""


class NothingToResume(ValueError):
    """`train()` of a resumed run that had already finished all its epochs."""


# ------------------------------------------------------------------------------ RNG state
def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def rng_state() -> dict:
    np_state = np.random.get_state()
    st = {"python": random.getstate(), "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                                                 "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                                                 "cached_gaussian": float(np_state[4])},
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def claim_dir(path: Path, exist_ok: bool) -> Path:
    """The run folder, created atomically: `path`, else `path2`, `path3`... (mkdir without
    exist_ok, so two runs started together never share one); `exist_ok`: `path` as it is."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if exist_ok:
            path.mkdir(exist_ok=True)
            return path
        k = 1
        while True:
            p = path if k == 1 else Path(f"{path}{k}")
            try:
                p.mkdir()
                return p
            except FileExistsError:
                k += 1
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        raise WriteError(path, f"cannot create the run folder ({e.strerror or e})") from None


# settings a resumed run may change (where and how it runs, not what it computes); the others
# are its saved ones, and asking for another value is an error rather than silently ignored
RESUME_MAY_CHANGE = ("device", "workers", "val_batch", "plots", "save_period", "speed_probe",
                     "channels_last", "compile", "patience", "cache")
RESUME_LOCATORS = ("resume", "project", "name", "exist_ok")


def resume_conflicts(saved: TrainConfig, asked: TrainConfig, explicit=None) -> list[str]:
    """`field=asked (run has saved)` for each setting a resume cannot change that `asked` sets
    to another value than the run's. `explicit`: the names the user gave (None: those that
    differ from the defaults)."""
    default = TrainConfig()
    out = []
    for f in dataclasses.fields(TrainConfig):
        k = f.name
        if k in RESUME_MAY_CHANGE or k in RESUME_LOCATORS:
            continue
        a, s = getattr(asked, k), getattr(saved, k)
        given = k in explicit if explicit is not None else a != getattr(default, k)
        if k == "data" and a and s and Path(a).resolve() == Path(s).resolve():
            continue
        if given and a != s:
            out.append(f"{k}={a} (the run has {s})")
    return out


def load_finetune_weights(model: torch.nn.Module, src: str) -> list[str]:
    """Load every tensor of `src` that fits; classification layers of another class count are
    left re-initialised. Returns the names skipped. Raises when anything else does not fit."""
    from ..api import resolve_weights
    sd = extract_state_dict(safe_load(resolve_weights(src)))
    own = model.state_dict()
    skipped = [k for k in own if k in sd and own[k].shape != sd[k].shape and k.startswith("bbox_head.rtm_cls")]
    bad = [k for k in own if k in sd and own[k].shape != sd[k].shape and k not in skipped]
    missing = [k for k in own if k not in sd]
    if bad or missing:
        raise ValueError(f"{src} does not fit {type(model).__name__}: "
                         f"shape mismatch {bad[:5]}, missing {missing[:5]}")
    dropped = [k for k in sd if k not in own]
    if dropped:  # e.g. the mask head of an RTMDet-Ins checkpoint fine-tuned as a detector
        heads = sorted({".".join(k.split(".")[:2]) for k in dropped})
        log.warning("fine-tune: %d tensors of %s have no place in %s and were dropped: %s%s",
                    len(dropped), src, type(model).__name__, ", ".join(heads[:6]),
                    f" (+{len(heads) - 6} more)" if len(heads) > 6 else "")
    model.load_state_dict({k: v for k, v in sd.items() if k in own and k not in skipped}, strict=False)
    return skipped


def weights_model(src: str) -> str | None:
    """The released model whose architecture the fine-tuning weights `src` (a zoo name or a
    checkpoint) have, e.g. "rtmdet-s"; None for an architecture no preset has."""
    from ..api import infer_config, resolve_weights
    from ..presets import is_model_name, record_for
    if is_model_name(src):
        return get_record(src).name
    ck = safe_load(resolve_weights(src))
    rec = record_for(infer_config(extract_state_dict(ck), ck.get("meta") if isinstance(ck, dict) else None))
    return rec.name if rec is not None else None


def model_for_weights(cfg: TrainConfig, explicit) -> TrainConfig:
    """Fine-tuning (`weights`) without a model named trains the weights' own architecture
    (`--weights rtmdet-s` alone builds rtmdet-s, not the default rtmdet-tiny). A model named
    that cannot hold the weights (another size) is a ValueError naming both; one of the same
    size but another task takes what fits (a mask checkpoint fine-tuned as a detector)."""
    from ..presets import ARCH
    held = weights_model(cfg.weights)
    asked = get_record(cfg.model)
    if held is None or held == asked.name:
        return cfg
    given = "model" in explicit if explicit is not None else cfg.model != TrainConfig.model
    if not given:
        log.info("model %s: the architecture of the weights %s", held, cfg.weights)
        return dataclasses.replace(cfg, model=held)
    if ARCH[get_record(held).size] != ARCH[asked.size]:
        raise ValueError(f"the weights {cfg.weights} are an {held}; model={cfg.model} is another "
                         f"size and cannot take them: give model {held}, or leave the model out "
                         f"to train the weights' own")
    return cfg


def pretrained_backbone_source(cfg: TrainConfig, record) -> str | None:
    """What `cfg.pretrained_backbone` asks for: None/true -> the recipe's backbone URL (tiny and
    s; None for m/l/x), false -> None (from scratch), anything else -> that path/URL/name."""
    v = cfg.pretrained_backbone
    if isinstance(v, str) and v.strip().lower() in ("", "none", "null", "true", "yes", "on", "default"):
        v = None
    if v is False or (isinstance(v, str) and v.strip().lower() in ("false", "no", "off")):
        return None
    if v is None or v is True:
        return record.pretrained_backbone
    return str(v)


class Trainer:
    """`Trainer(cfg).train()` runs the whole recipe; `callbacks` are called as `cb(trainer)` after
    every optimizer step (tests use them to interrupt a run)."""

    def __init__(self, cfg: TrainConfig, callbacks: list[Callable] | None = None,
                 explicit=None):
        """`explicit`: the settings the user gave (the CLI's flags and key=value); on resume
        any of them that differs from the run's saved value is an error. None: every setting
        that differs from the defaults counts as given."""
        self.callbacks = list(callbacks or [])
        self.stop = StopFlag()  # raised by the first Ctrl-C or SIGTERM while `train()` runs
        self.epoch_seconds: list[float] = []  # of the epochs this process ran (the ETA's base)
        self.at_batch = 0  # the batch being computed
        cfg = validate(cfg)
        if cfg.pipeline not in ("recipe", "stage2", "light"):
            raise ValueError(f"pipeline must be recipe, stage2 or light, got {cfg.pipeline!r}")
        self.resume_ckpt = None
        if cfg.resume:
            cfg = self._resume_cfg(cfg, explicit)
            self.save_dir = Path(cfg.resume).parent
        else:  # claimed (created) when training starts: constructing writes nothing
            self.save_dir = Path(cfg.project) / cfg.name
            if cfg.weights:
                cfg = model_for_weights(cfg, explicit)
        self.cfg = cfg
        self._setup_dist()
        seed_everything(cfg.seed + self.rank, cfg.deterministic)
        self._build()

    def _resume_cfg(self, cfg: TrainConfig, explicit) -> TrainConfig:
        """The saved settings of the run `cfg.resume` names, with the ones a resume may change
        taken from `cfg`; ValueError for a checkpoint without training state, a finished run,
        or a setting that cannot change."""
        path = Path(cfg.project) / cfg.name / "last.pth" if cfg.resume in ("auto", "True", "true") \
            else Path(cfg.resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint not found: {path}")
        ck = safe_load(path)
        if not isinstance(ck, dict) or not all(k in ck for k in ("train_cfg", "optimizer", "epoch")):
            hint = "; resume from last.pth of its run" + (f" ({path.parent / 'last.pth'})"
                                                          if (path.parent / "last.pth").is_file()
                                                          and path.name != "last.pth" else "")
            raise ValueError(f"{path} has no training state (only weights){hint}, or fine-tune "
                             f"from it with --weights {path}")
        saved = validate(from_dict(TrainConfig, ck["train_cfg"]))
        bad = resume_conflicts(saved, cfg, explicit)
        if bad:
            raise ValueError(f"--resume continues a run with its saved settings; cannot change "
                             f"{', '.join(bad)}. To train on with other settings, start a new run "
                             f"from its weights: --weights {path}")
        self.resume_ckpt = ck
        default = TrainConfig()
        keep = {k: getattr(cfg, k) if (k in explicit if explicit is not None
                                       else getattr(cfg, k) != getattr(default, k))
                else getattr(saved, k) for k in RESUME_MAY_CHANGE}
        return dataclasses.replace(saved, resume=str(path), **keep)

    # ----------------------------------------------------------------------- setup
    def _setup_dist(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.world > 1:
            if dev.startswith("cuda"):
                torch.cuda.set_device(self.local_rank)
                dev = f"cuda:{self.local_rank}"
            if not dist.is_initialized():
                dist.init_process_group("nccl" if dev.startswith("cuda") else "gloo")
        self.device = torch.device(dev)
        self.main = self.rank == 0
        if self.device.type == "cuda" and not self.cfg.deterministic:
            torch.backends.cudnn.benchmark = True  # one input size all run: pick the fastest convs

    def _build(self) -> None:
        from ..data.datasets import load_dataset
        from ..data.loader import TrainDataset
        cfg = self.cfg
        self.record = get_record(cfg.model)
        self.family = get_family(self.record.family)
        kind = self.family.dataset_kind
        self.train_data = load_dataset(cfg.data, cfg.train_split, kind=kind)
        try:
            self.val_data = load_dataset(cfg.data, cfg.val_split, kind=kind)
        except (FileNotFoundError, ValueError) as e:
            log.warning("no validation split (%s): best.pth follows the last epoch", e)
            self.val_data = None
        self.train_set = TrainDataset(self.train_data, model_size=self.record.pipeline,
                                      img_scale=cfg.imgsz, seed=cfg.seed, targets=self.family.targets,
                                      target_steps=dict(self.family.target_steps))
        left_out = {k: n for k, n in self.train_set.left_out.items() if n}
        if left_out and self.main:
            log.info("training on %d of %d images: left out %s (as the reference's filter_empty_gt "
                     "and min_size do)", len(self.train_set), len(self.train_data),
                     ", ".join(f"{n} {k}" for k, n in left_out.items()))
        model = create(cfg.model, num_classes=self.train_data.num_classes,
                       class_names=self.train_data.class_names)
        model.test_cfg = dataclasses.replace(model.test_cfg, imgsz=cfg.imgsz)
        self.backbone_report = None
        if cfg.weights and self.resume_ckpt is None:
            skipped = load_finetune_weights(model, cfg.weights)
            if skipped and self.main:
                log.info("fine-tune: re-initialised %d classification tensors (class count differs)", len(skipped))
            explicit = pretrained_backbone_source(cfg, self.record)
            if self.main and explicit not in (None, self.record.pretrained_backbone):
                log.warning("pretrained_backbone=%s ignored: fine-tuning from %s", explicit, cfg.weights)
        elif self.resume_ckpt is None:  # a resumed run has its weights already
            src = pretrained_backbone_source(cfg, self.record)
            if src is not None:
                self.backbone_report = self._load_backbone(model, src)
        if cfg.freeze:  # before the optimizer is built: it takes only what trains
            model.backbone.freeze(cfg.freeze)
            if self.main:
                n = sum(p.numel() for p in model.parameters())
                log.info("freeze=%d: backbone %s frozen (%.2fM of %.2fM parameters train)", cfg.freeze,
                         ", ".join(model.backbone.PARTS[:cfg.freeze]),
                         sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, n / 1e6)
        model.to(self.device)
        # channels-last pays on CUDA (tensor-core convs); the CPU keeps the layout it trains with
        self.channels_last = bool(cfg.channels_last and self.device.type == "cuda")
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and self.world > 1:
            if self.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif self.main:  # torch's SyncBatchNorm is CUDA-only
                log.warning("sync_bn=true needs CUDA; on %s each process keeps its own BatchNorm "
                            "statistics", self.device.type)
        self.model = model
        self.net = model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:  # the forward only; checkpoints and the EMA read `self.model`'s keys
            self.net = torch.compile(self.net)
        total_batch = cfg.batch * self.world * cfg.grad_accum
        self.lr = cfg.lr if cfg.lr is not None else scaled_lr(total_batch, *self.record.base_lr)
        self.optimizer = build_optimizer(model, self.lr, cfg.weight_decay)
        self.iters_per_epoch = math.ceil(self._batches_per_epoch() / cfg.grad_accum)
        self.warmup = warmup_steps(self.iters_per_epoch * cfg.epochs, cfg.warmup_iters,
                                   cfg.warmup_ratio, cfg.warmup_min_iters)
        self.scheduler = RTMDetLRScheduler(self.optimizer, self.iters_per_epoch, cfg.epochs,
                                           self.warmup, cfg.warmup_start, cfg.min_lr_ratio)
        self.ema = ExpMomentumEMA(model, cfg.ema_momentum, cfg.ema_gamma, update_buffers=True)
        self.amp_dtype = autocast_dtype(cfg.amp, cfg.amp_dtype, self.device)
        self.amp = self.amp_dtype is not None
        self.scaler = grad_scaler(self.amp_dtype)
        self._train_loader = None
        self.start_epoch, self.iteration, self.best_fitness = 0, 0, -1.0
        self.start_batch, self.resume_sums = 0, {}
        self.best_epoch, self.stopped_early = 0, False  # patience counts from best_epoch
        self.last_evaluation = self.best_evaluation = None
        if self.resume_ckpt is not None:
            self._load_resume(self.resume_ckpt)

    def _cache_images(self) -> None:
        """`cache=true`: the training images decoded into memory, unless they would crowd it."""
        need, free = self.train_set.cache_bytes(), available_memory()
        if free is not None and need > 0.7 * free:
            log.warning("cache: the %d training images need %.1f GB decoded, %.1f GB of memory is "
                        "available: not cached (they are read from disk as usual)",
                        len(self.train_set), need / 1e9, free / 1e9)
            return
        held = self.train_set.cache_images(progress=self.main)
        if self.main:
            log.info("cache: %d training images decoded into memory (%.2f GB%s)", len(self.train_set),
                     held / 1e9, f" in each of {self.world} processes" if self.world > 1 else "")

    def _load_backbone(self, model: torch.nn.Module, src: str):
        """ImageNet weights into `model.backbone` before the first step; rank 0 downloads first
        (the others then read the cached file). Offline: a one-line ValueError saying what to do."""
        from ..pretrained import backbone_url, is_url, load_pretrained_backbone, offline_message
        from ..zoo import DownloadError
        try:
            if self.world > 1 and not self.main:
                dist.barrier()
            return load_pretrained_backbone(model, src, progress=self.main)
        except DownloadError as e:
            url = src if is_url(src) else backbone_url(src)
            raise ValueError(offline_message(url, str(e).replace(f"download of {url} ", "download "))) from None
        finally:
            if self.world > 1 and self.main:
                dist.barrier()

    def _batches_per_epoch(self) -> int:
        n = len(self.train_set)
        per_rank = math.ceil(n / self.world)
        return max(1, math.ceil(per_rank / self.cfg.batch))

    def _load_resume(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        self.ema.load_state_dict(ck["ema"])
        # the kernel choice (fused on CUDA, foreach on the CPU) follows this run's device,
        # not the one the checkpoint was written on
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ck["optimizer"])
        for g, kv in zip(self.optimizer.param_groups, kernels):
            g.update(kv)
            for p in g["params"] if g.get("fused") else ():  # fused keeps `step` on the device
                st = self.optimizer.state.get(p, {})
                if torch.is_tensor(st.get("step")):
                    st["step"] = st["step"].to(p.device, torch.float32)
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ck["scaler"])
        self.start_epoch, self.iteration = int(ck["epoch"]), int(ck["iteration"])
        self.start_batch = int(ck.get("batch", 0))
        self.resume_sums = dict(ck.get("epoch_sums") or {})
        self.best_fitness = float(ck.get("best_fitness", -1.0))
        self.best_epoch = int(ck.get("best_epoch", self.start_epoch))
        self.stopped_early = bool(ck.get("stopped_early", False))
        set_rng_state(ck["rng"])
        if self.main:
            where = (f"inside epoch {self.start_epoch + 1} after {self.start_batch} batches" if self.start_batch
                     else f"at epoch {self.start_epoch}")
            log.info("resumed from %s %s (iteration %d)", self.cfg.resume, where, self.iteration)

    # ----------------------------------------------------------------------- loop
    def stage_of(self, epoch: int) -> int:
        """The recipe's pipeline stage of `epoch` (always 1 for a one-pipeline recipe, RTMDet-R's:
        then validation follows val_interval only)."""
        from ..data.transforms import pipeline_params
        if not pipeline_params(self.record.pipeline).two_stage:
            return 1
        return 2 if epoch >= self.cfg.epochs - self.cfg.stage2_epochs else 1

    def _loader(self, epoch: int):
        """The run's one DataLoader (persistent workers), set to `epoch` and its stage. Every
        epoch draws what a fresh loader would: workers start fresh pipeline copies (empty
        mosaic/mixup caches) and generators at each new epoch, so a resume replays exactly."""
        from ..data.loader import build_train_loader
        from ..data.transforms import build_train_pipeline
        ds = self.train_set
        stage = self.stage_of(epoch) if self.cfg.pipeline == "recipe" else 2
        ds.set_stage(stage)
        if self._train_loader is None:
            if self.cfg.pipeline == "light":
                from ..data.transforms import PAD_VAL, Compose, Pad, RandomFlip, Resize
                sc = (self.cfg.imgsz, self.cfg.imgsz)
                ds.pipelines = {s: Compose([Resize(sc), RandomFlip(0.5), Pad(sc, PAD_VAL)]) for s in (1, 2)}
            else:
                ds.pipelines = {s: build_train_pipeline(self.record.pipeline, s, self.cfg.imgsz,
                                                        self.train_data.class_names) for s in (1, 2)}
            sampler = None
            if self.world > 1:
                from torch.utils.data.distributed import DistributedSampler
                sampler = DistributedSampler(ds, num_replicas=self.world, rank=self.rank, shuffle=True,
                                             seed=self.cfg.seed)
            # prefetch 4 batches a worker: uint8 batches are small, and mosaic's cost varies
            self._train_loader = build_train_loader(
                ds, self.cfg.batch, num_workers=self.cfg.workers, seed=self.cfg.seed, epoch=epoch,
                sampler=sampler, pin_memory=self.device.type == "cuda", persistent_workers=True,
                prefetch_factor=4)
        self._train_loader.sampler.set_epoch(epoch, stage)
        return self._train_loader

    def speed_probe(self) -> dict:
        """Images/s of the loader alone (a few batches drawn, not computed) and of the training
        step alone (forward, loss, backward, AdamW on one repeated batch, on a copy of the
        model with a throwaway optimizer), logged with which one limits training. The run's
        weights, optimizer, data draws and random streams are untouched (RNG saved/restored)."""
        from ..data.loader import loader_images_per_s
        cfg, cuda = self.cfg, self.device.type == "cuda"
        state = rng_state()
        try:
            loader = self._loader(self.start_epoch)
            stage = loader.sampler.stage
            loader_ips, batch = loader_images_per_s(loader, 10 if cuda else max(3, cfg.workers), stage)
            model = copy.deepcopy(self.model).train()
            opt = build_optimizer(model, self.lr, cfg.weight_decay)
            scaler = grad_scaler(self.amp_dtype)

            def step():
                parts = forward_loss(model, model, self.family, batch, self.device, self.amp_dtype,
                                     self.channels_last)
                backward_step(sum(parts.values()), opt, scaler)

            warm, timed = (2, 5) if cuda else (1, 2)
            for _ in range(warm):
                step()
            if cuda:
                torch.cuda.synchronize(self.device)
            t = time.perf_counter()
            for _ in range(timed):
                step()
            if cuda:
                torch.cuda.synchronize(self.device)
            step_ips = timed * len(batch["imgs"]) / max(time.perf_counter() - t, 1e-9)
            del model, opt
        finally:
            set_rng_state(state)
        w = cfg.workers
        how = ", ".join(x for x in (f"{str(self.amp_dtype).split('.')[-1]} AMP" if self.amp else "float32",
                                    "channels_last" if self.channels_last else "",
                                    "not compiled" if cfg.compile else "") if x)
        if loader_ips < step_ips:
            verdict = (f"the loader limits training; raise --workers ({w} now, {os.cpu_count()} CPUs)"
                       if w < (os.cpu_count() or 1) else "the loader limits training (all CPUs busy)")
        else:
            verdict = "the step limits training (the loader keeps up)"
        if self.main:
            log.info("speed probe (stage %d, batch %d): loader %.1f img/s (%d workers) vs step %.1f "
                     "img/s (%s): %s", stage, len(batch["imgs"]), loader_ips, w, step_ips, how, verdict)
        return {"loader": loader_ips, "step": step_ips}

    def train(self) -> dict:
        cfg = self.cfg
        if self.resume_ckpt is not None and self.start_epoch >= cfg.epochs:
            raise NothingToResume(f"{cfg.resume}: the run already finished its {cfg.epochs} epochs; "
                                  f"nothing to resume (train on with a new run: --weights "
                                  f"{cfg.resume} --epochs N)")
        if self.stopped_early and self._patience_over(self.start_epoch):
            raise NothingToResume(f"{cfg.resume}: the run stopped early at epoch {self.start_epoch}, "
                                  f"{self.start_epoch - self.best_epoch} epochs after its best "
                                  f"validation (epoch {self.best_epoch}); to train on, resume with "
                                  f"a larger patience=N (or patience=0)")
        self.stopped_early = False
        if self.main:
            if self.resume_ckpt is None:
                self.save_dir = claim_dir(Path(cfg.project) / cfg.name, cfg.exist_ok)
            save_yaml(cfg, self.save_dir / "config.yaml")
            if cfg.plots and not (self.save_dir / "labels.png").exists():
                self._plot_labels()
            steps = self.iters_per_epoch * cfg.epochs
            log.info("training %s on %s: %d images, %d classes, %d epochs (%d steps), results in %s",
                     cfg.model, cfg.data, len(self.train_set), self.train_data.num_classes,
                     cfg.epochs, steps, self.save_dir)
            log.info("lr %.2e now, %.2e after a %d-step linear warm-up, cosine down to %.2e from "
                     "epoch %d", self.optimizer.param_groups[0]["lr"], self.lr, self.warmup,
                     self.lr * cfg.min_lr_ratio, cfg.epochs // 2 + 1)
        if cfg.cache:  # before the loader's workers start: they share the decoded pages
            self._cache_images()
        try:
            # DDP: the ranks agree on the step to stop at (train_epoch), so a repeat (torchrun
            # forwarding the terminal's Ctrl-C) must not interrupt the save
            with stop_on_signals(repeats_interrupt=self.world == 1) as self.stop:
                return self._train_epochs()
        finally:  # stop the persistent workers
            self._train_loader = None

    def _train_epochs(self) -> dict:
        cfg = self.cfg
        if cfg.speed_probe:
            self.speed_probe()
        metrics, done = {}, self.start_epoch
        for epoch in range(self.start_epoch, cfg.epochs):
            t0, done = time.time(), epoch + 1
            skip = self.start_batch if epoch == self.start_epoch else 0
            try:
                losses = self.train_epoch(epoch, skip)
            except torch.cuda.OutOfMemoryError:
                raise self._out_of_memory(epoch) from None
            metrics = {}
            last = epoch + 1 == cfg.epochs
            if self.main:
                if self.val_data is not None and ((epoch + 1) % cfg.val_interval == 0
                                                  or (self.stage_of(epoch) == 2 and cfg.pipeline == "recipe")
                                                  or last):
                    self.last_evaluation = None
                    try:
                        metrics = self.validate()
                    except torch.cuda.OutOfMemoryError:
                        raise self._out_of_memory(epoch, validating=True) from None
                fitness = self.family.fitness(metrics)
                is_best = fitness > self.best_fitness or (self.val_data is None)
                if is_best:
                    self.best_fitness = max(fitness, self.best_fitness)
                    self.best_epoch = epoch + 1
                    self.best_evaluation = self.last_evaluation if metrics else None
                self.stopped_early = bool(metrics) and not last and self._patience_over(epoch + 1)
                self.save_checkpoint(epoch + 1, is_best)
                self.log_epoch(epoch, losses, metrics, time.time() - t0)
            stop = bool(self.stop)
            if self.world > 1:  # every rank stops with rank 0's early stop, and with any rank's signal
                flags = torch.tensor([float(self.stopped_early), float(stop)], device=self.device)
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                self.stopped_early, stop = (bool(f) for f in flags.tolist())
            if stop and not last:
                self._stopped(epoch + 1)
            if self.stopped_early:
                if self.main:
                    log.info("early stop after epoch %d: no better validation in the %d epochs since "
                             "epoch %d (fitness %.4f, in best.pth); patience=%d", epoch + 1,
                             epoch + 1 - self.best_epoch, self.best_epoch, self.best_fitness,
                             cfg.patience)
                break
        if self.main:
            self.report_best()
            best = (f"best.pth: epoch {self.best_epoch}, {self.family.metric_keys[0]} {self.best_fitness:.4f}"
                    if self.val_data is not None and self.best_fitness >= 0 else
                    f"best.pth: epoch {self.best_epoch} (no validation: the last epoch)")
            log.info("finished: %s (%s; last.pth: epoch %d%s)", self.save_dir, best, done,
                     ", stopped early" if self.stopped_early else "")
        return metrics

    def _out_of_memory(self, epoch: int, validating: bool = False) -> OutOfMemory:
        """The error for a CUDA out-of-memory in epoch `epoch` (0-based): what to lower, and
        what is kept. In validation the epoch's training is saved first (a resume may lower
        val_batch); in a step the last checkpoint stands (a resume cannot change the batch:
        grad_accum keeps the total batch, and with it the lr, in a new run from its weights)."""
        cfg, last = self.cfg, self.save_dir / "last.pth"
        torch.cuda.empty_cache()
        if validating:
            self.save_checkpoint(epoch + 1, False)
            return OutOfMemory(f"out of GPU memory validating epoch {epoch + 1} (val_batch={cfg.val_batch}); "
                               f"{last} holds the epoch (its validation did not run): continue with "
                               f"rtmdet train --resume {last} val_batch={max(cfg.val_batch // 2, 1)}")
        lower = (f"batch={cfg.batch // 2} grad_accum={cfg.grad_accum * 2} (the same total batch and lr)"
                 if cfg.batch > 1 else f"imgsz={max(cfg.imgsz // 2 // 32 * 32, 32)}")
        head = (f"out of GPU memory in a training step at epoch {epoch + 1}, batch {self.at_batch} "
                f"(batch={cfg.batch}, imgsz={cfg.imgsz}{', amp=false' if not cfg.amp else ''})")
        fix = f"train with less per step, e.g. {lower}" + (", or amp=true" if not cfg.amp else "")
        if last.is_file():
            return OutOfMemory(f"{head}; the last checkpoint is {last}: {fix}, from its weights "
                               f"(--weights {last})")
        return OutOfMemory(f"{head}; no checkpoint was written yet: {fix}")

    def _patience_over(self, epoch: int) -> bool:
        """Whether `patience` epochs have passed since the best validation, at the end of `epoch`."""
        return (self.cfg.patience > 0 and self.val_data is not None
                and epoch - self.best_epoch >= self.cfg.patience)

    def _stopped(self, epoch: int, batch: int = 0, sums: dict | None = None):
        """Ctrl-C or SIGTERM: last.pth at the last optimizer step (`batch` batches into `epoch`,
        or the end of epoch `epoch`), then stop with `TrainingInterrupted`. Under DDP every rank
        comes here at the same step; rank 0 saves while the others wait (a rank that left
        first would have torchrun kill rank 0 in the middle of its save)."""
        path = self.save_dir / "last.pth"
        if batch and self.main:
            self.save_checkpoint(epoch, False, batch=batch, sums=sums)
        if self.world > 1:
            dist.barrier()
        where = f"epoch {epoch + 1}, batch {batch}" if batch else f"the end of epoch {epoch}"
        by = self.stop.reason or "a signal to another rank"
        if not path.is_file():
            raise TrainingInterrupted(f"stopped by {by} before the first optimizer step; nothing to save",
                                      None, self.stop.exit_code)
        raise TrainingInterrupted(f"stopped by {by}; {path} holds the run at {where} "
                                  f"(continue with: rtmdet train --resume {path})", path,
                                  self.stop.exit_code)

    def train_epoch(self, epoch: int, skip: int = 0) -> dict:
        """One epoch. `skip` batches (a mid-epoch resume) are drawn from the loader but not
        computed: the data pipeline (mosaic caches, random draws) replays exactly up to there."""
        from tqdm import tqdm
        cfg = self.cfg
        self.net.train()
        loader = self._loader(epoch)
        n = len(loader)
        sums = dict.fromkeys((*self.family.loss_keys, "loss"), 0.0)
        if skip and self.resume_sums:
            sums.update(self.resume_sums)
        bar = tqdm(loader, total=n, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.main,
                   dynamic_ncols=True, leave=True)
        self.optimizer.zero_grad(set_to_none=True)
        stepped = (skip, dict(sums))  # batches done and loss sums at the last optimizer step
        for i, batch in enumerate(bar):
            if i < skip:
                continue
            self.at_batch = i  # named by an out-of-memory error
            if i == skip and self.main and cfg.plots:
                self._draw_batch(batch, self.stage_of(epoch))
            parts = forward_loss(self.net, self.model, self.family, batch, self.device, self.amp_dtype,
                                 self.channels_last)
            loss = sum(parts.values())
            parts = {k: v.detach() for k, v in parts.items()}
            vals = torch.stack([*parts.values(), loss.detach()])
            finite = torch.isfinite(vals).all().float()
            if self.world > 1:  # one collective per step: whether every rank is finite and goes on
                flags = torch.stack([finite, torch.tensor(float(not self.stop), device=finite.device)])
                dist.all_reduce(flags, op=dist.ReduceOp.MIN)
                finite, go_on = flags.tolist()
                stop_here = go_on < 1  # agreed now: a signal arriving later waits for the next step
            else:
                finite = finite.item()
            if finite < 1:
                raise NonFiniteLossError(
                    f"loss is not finite at epoch {epoch + 1}, batch {i} (loss_cls={vals[0].item()}, "
                    f"loss_bbox={vals[1].item()}, total={vals[-1].item()}); stopped. The last good checkpoint is "
                    f"{self.save_dir / 'last.pth'}. Try a lower lr, a longer warm-up, amp_dtype=bfloat16 or amp=false.")
            # the epoch's last group may hold fewer batches: average over the ones it has
            group = min(cfg.grad_accum, n - i // cfg.grad_accum * cfg.grad_accum)
            self.scaler.scale(loss / group).backward()
            if (i + 1) % cfg.grad_accum == 0 or i + 1 == n:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.ema.update(self.model)
                self.iteration += 1
                for cb in self.callbacks:
                    cb(self)
            for k, v in zip(sums, vals.tolist()):
                sums[k] += v
            if (i + 1) % cfg.grad_accum == 0 or i + 1 == n:
                stepped = (i + 1, dict(sums))
            if (cfg.save_period and self.main and (i + 1) % cfg.grad_accum == 0 and i + 1 < n
                    and self.iteration % cfg.save_period == 0):
                self.save_checkpoint(epoch, False, batch=i + 1, sums=sums)
            if self.main:
                extra = {"mask": f"{sums['loss_mask'] / (i + 1):.4f}"} if "loss_mask" in sums else {}
                if self.device.type == "cuda":  # device memory means nothing on the CPU
                    extra["mem"] = f"{torch.cuda.memory_reserved(self.device) / 2**30:.1f}G"
                bar.set_postfix(cls=f"{sums['loss_cls'] / (i + 1):.4f}", bbox=f"{sums['loss_bbox'] / (i + 1):.4f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", **extra)
            if (stop_here if self.world > 1 else self.stop) and i + 1 < n:  # no further batch is fetched
                bar.update(i + 1 - bar.n)  # the bar counts a batch when the next one is asked for
                bar.close()
                self._stopped(epoch, *stepped)
        bar.close()
        return {k: v / max(n, 1) for k, v in sums.items()}

    # ----------------------------------------------------------------------- eval / io
    @torch.no_grad()
    def validate(self) -> dict:
        """The EMA model on the validation split: the summary (AP, ...); the whole `Evaluation`
        is kept in `last_evaluation` (the best one's table and plots end the run)."""
        from ..eval.validate import Evaluation, predict_dataset
        results = predict_dataset(self.ema.module, self.val_data, self.cfg.val_batch, progress=self.main,
                                  score_thr=self.cfg.val_score_thr, imgsz=self.cfg.imgsz)
        metrics = self.family.evaluate(self.val_data, results)
        # kept for the end-of-run report: the table needs the metrics only, the plots (where the
        # family has them) the boxes; never the masks' RLEs (hundreds of MB for COCO val)
        plots = self.cfg.plots and type(self.family).save_plots is not TaskFamily.save_plots
        kept = [{k: v for k, v in r.items() if k != "segmentations"} for r in results] if plots else []
        self.last_evaluation = Evaluation(metrics, kept, self.val_data, self.family)
        return self.last_evaluation.summary

    def report_best(self) -> None:
        """The end of a run: the best validation's per-class table (logged and saved as
        `val_best.txt`) and, with `plots`, its PR curves and confusion matrix, with no extra
        pass over the data. Only for a best validation this process ran (not one before a resume)."""
        ev = self.best_evaluation
        if ev is None:
            return
        from ..atomic import write_text
        table = ev.table()
        log.info("best.pth (epoch %d) on %s:\n%s", self.best_epoch, self.cfg.val_split, table)
        try:
            write_text(self.save_dir / "val_best.txt", f"best.pth: epoch {self.best_epoch}\n{table}\n")
            if self.cfg.plots:
                ev.save_plots(self.save_dir)
        except Exception as e:  # the run is done; a picture must not turn it into a failure
            log.warning("could not write the best validation's table or plots: %s", e)

    def checkpoint(self, epoch: int, batch: int = 0, sums: dict | None = None) -> dict:
        """Everything a resume needs. `epoch` counts finished epochs; `batch` > 0 marks a
        checkpoint taken inside epoch `epoch` after that many batches (with the loss sums so far)."""
        return {"state_dict": self.ema.module.state_dict(),  # EMA weights: what rtmdet.load reads
                "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "epoch": epoch, "batch": batch, "epoch_sums": dict(sums or {}),
                "iteration": self.iteration, "best_fitness": self.best_fitness,
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "rng": rng_state(), "meta": checkpoint_meta(self.ema.module), "train_cfg": to_dict(self.cfg)}

    def save_checkpoint(self, epoch: int, is_best: bool, batch: int = 0, sums: dict | None = None) -> None:
        ck = self.checkpoint(epoch, batch, sums)
        atomic_save(ck, self.save_dir / "last.pth")
        if is_best:
            atomic_save({"state_dict": ck["state_dict"], "meta": ck["meta"], "epoch": epoch,
                         "best_fitness": self.best_fitness}, self.save_dir / "best.pth")

    def _plot_labels(self) -> None:
        """`labels.png`: the training labels at a glance (classes, box centres, box sizes)."""
        from ..eval.plots import plot_labels
        try:
            plot_labels(self.train_data, self.save_dir / "labels.png")
        except Exception as e:  # a picture must never stop training
            log.warning("could not plot labels.png: %s", e)

    def _draw_batch(self, batch: dict, stage: int) -> None:
        """`train_batch_stage<N>.jpg`: the first batch of each pipeline stage with its boxes, once
        per run (a resume keeps the picture it finds), so a user can see what the model is fed."""
        from ..atomic import write_image
        from ..viz import draw_batch
        path = self.save_dir / f"train_batch_stage{stage}.jpg"
        if path.exists():
            return
        try:
            write_image(path, draw_batch(batch, self.train_data.class_names))
        except Exception as e:  # a picture must never stop training
            log.warning("could not draw %s: %s", path.name, e)

    def log_epoch(self, epoch: int, losses: dict, metrics: dict, seconds: float) -> None:
        path = self.save_dir / "results.csv"
        row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **losses,
               **{k: metrics.get(k, "") for k in self.family.metric_keys},
               "time_s": round(seconds, 2)}
        write_results_row(path, row)
        self.epoch_seconds.append(seconds)
        left = self.cfg.epochs - (epoch + 1)
        eta = f"; about {duration(sum(self.epoch_seconds) / len(self.epoch_seconds) * left)} to go" if left else ""
        log.info("epoch %d/%d: %s%s", epoch + 1, self.cfg.epochs,
                 ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items() if v != "" and k != "epoch"), eta)
        if self.cfg.plots:
            try:
                plot_results(path, self.save_dir / "results.png", self.family.metric_keys)
            except Exception as e:  # plotting must never stop training
                log.warning("could not plot results: %s", e)


def duration(seconds: float) -> str:
    """`42s`, `7m05s`, `3h02m`: a time span as a person reads it."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def write_results_row(path: Path, row: dict) -> None:
    """Add `row` to the results table, replacing rows of the same or a later epoch (a resumed
    run repeats them); the whole file is rewritten atomically, so a kill mid-write leaves the
    previous table, never a torn line."""
    import io
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit()
                    and int(r["epoch"]) < int(row["epoch"])]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(row), restval="", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows + [row])
    write_text(path, buf.getvalue())


def plot_results(csv_path: Path, out: Path, metric_keys=("AP", "AP50")) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..eval.plots import save_figure
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    ep = [int(r["epoch"]) for r in rows]
    keys = ["loss_cls", "loss_bbox", "loss", *list(metric_keys)[:2], "lr"]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, k in zip(axes.ravel(), keys):
        pts = [(e, float(r[k])) for e, r in zip(ep, rows) if r.get(k) not in (None, "")]
        if pts:
            ax.plot(*zip(*pts), marker=".")
        ax.set_title(k)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    save_figure(fig, out, dpi=100)
    plt.close(fig)


@dataclasses.dataclass
class TrainResult:
    """What a finished `train()` leaves behind."""
    save_dir: Path       # the run's folder (config.yaml, results.csv/png, checkpoints)
    best: Path           # best.pth: the weights of the best validation; `rtmdet.load` reads it
    last: Path           # last.pth: everything `resume=` needs
    metrics: dict        # the last epoch's validation (e.g. AP, AP50, AP75); {} if it had none
    best_fitness: float  # what best.pth maximises (AP; mAP50 for RTMDet-R); -1 without validation
    best_epoch: int      # the epoch best.pth holds
    stopped_early: bool  # ended by `patience` before its last epoch


def train(cfg: TrainConfig | None = None, *, verbose: bool = True, **settings) -> TrainResult:
    """`rtmdet train` from Python: `train(data="my_yolo/data.yaml", model="rtmdet-s",
    weights="rtmdet-s", epochs=50, batch=16)`. `settings` are `TrainConfig` fields (paths may be
    `Path`s), applied over `cfg`; an unknown one is a ValueError naming the closest field.
    `resume="runs/train/exp/last.pth"` (or `resume=True`: `<project>/<name>/last.pth`) continues
    a run. Ctrl-C or SIGTERM saves last.pth and raises `TrainingInterrupted` (a KeyboardInterrupt).
    `verbose`: when logging is not configured, print the run's log (what `rtmdet train` prints)
    to stderr while it trains."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in settings:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise ValueError(f"unknown training setting {key!r}" +
                             (f"; did you mean {close[0]!r}?" if close else
                              " (see rtmdet.train.TrainConfig)"))
    settings = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in settings.items()}
    if settings.get("resume") is True:  # the last run of project/name, as `--resume` alone
        settings["resume"] = "auto"
    # on resume, the settings given are the ones that must not differ from the run's (as the
    # flags of `rtmdet train`); with a whole `cfg`, every value off the defaults counts as given
    explicit = set(settings) if cfg is None else None
    cfg = dataclasses.replace(cfg or TrainConfig(), **settings)
    with _log_to_stderr(verbose):
        trainer = Trainer(cfg, explicit=explicit)
        metrics = trainer.train()
    return TrainResult(trainer.save_dir, trainer.save_dir / "best.pth", trainer.save_dir / "last.pth",
                       metrics, float(trainer.best_fitness), trainer.best_epoch, trainer.stopped_early)


@contextlib.contextmanager
def _log_to_stderr(enabled: bool):
    """INFO logs of the "rtmdet" loggers on stderr while the block runs, unless the application
    configured logging itself (a handler on the root or "rtmdet" logger)."""
    logger = logging.getLogger("rtmdet")
    if not enabled or logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
