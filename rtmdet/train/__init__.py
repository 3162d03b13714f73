"""Training: `from rtmdet.train import train, TrainConfig`. The trainer (and torch's training
stack) is imported on first use, so `rtmdet.train.config` stays light."""

__all__ = ["train", "Trainer", "TrainConfig", "TrainResult", "TrainingInterrupted"]


def __getattr__(name):
    if name == "TrainConfig":
        from .config import TrainConfig
        return TrainConfig
    if name == "TrainingInterrupted":
        from .interrupt import TrainingInterrupted
        return TrainingInterrupted
    if name in ("train", "Trainer", "TrainResult"):
        from . import trainer
        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
