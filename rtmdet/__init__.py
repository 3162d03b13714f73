"""RTMDet real-time object detectors in plain PyTorch; official checkpoints load unchanged."""
from .api import create, evaluate, load
from .config import ModelConfig, TestConfig
from .inference import Detector
from .presets import model_config
from .detections import Detections
from .models.detector import RTMDet
from .models.detector_ins import RTMDetIns

__version__ = "0.1.0"
__all__ = ["create", "load", "evaluate", "Detector", "Detections", "RTMDet", "RTMDetIns", "ModelConfig",
           "TestConfig", "model_config"]
