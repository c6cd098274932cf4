"""Training: ``lightsr train CONFIG.toml`` and its Python API."""

from lightsr.train.config import Config, load_config
from lightsr.train.engine import TrainResult, train

__all__ = ["Config", "TrainResult", "load_config", "train"]
