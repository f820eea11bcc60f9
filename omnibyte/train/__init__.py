from omnibyte.train.config import DataConfig, RunConfig, TrainConfig, load_run_config
from omnibyte.train.trainer import Trainer, lr_at, train

__all__ = ["DataConfig", "RunConfig", "TrainConfig", "Trainer", "load_run_config", "lr_at", "train"]
