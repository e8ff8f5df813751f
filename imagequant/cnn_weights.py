"""Which ResNet-50 weights a run uses, checked and described without importing torch.

The Spark driver only needs to fail fast on missing weights and to record what the executors will load;
importing torch there would cost the driver about 0.7 GB for nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagequant.config import CnnConfig, Config, shipped_config
from imagequant.errors import ConfigError

# torchvision's ResNet50_Weights.IMAGENET1K_V2 file, as its hub cache names it
IMAGENET_WEIGHTS_NAME = "resnet50-11ad3fa6.pth"


def imagenet_weights_file() -> Path:
    """Where torchvision keeps ResNet-50's ImageNet weights in the local torch cache: torch.hub's folder,
    ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints" / IMAGENET_WEIGHTS_NAME


def describe_weights(cfg: CnnConfig) -> str:
    """What the images table records as ``cnn_weights``."""
    if not cfg.enabled:
        return "disabled"
    if cfg.weights == "random":
        return f"random(seed={cfg.seed})"
    return cfg.weights


def describe_features(config: Config) -> str:
    """What made an image's CNN features, as the images table's ``cnn_weights`` records it: the weights, and the
    crop size where it is not the shipped one (``imagenet at 160 px``): features of another crop size are as
    foreign to a network as those of other weights."""
    weights = describe_weights(config.cnn)
    if not config.cnn.enabled or config.imaging.cnn_size == shipped_config().imaging.cnn_size:
        return weights
    return f"{weights} at {config.imaging.cnn_size} px"


def check_weights(cfg: CnnConfig) -> None:
    """Fails fast (before any Spark work) when configured weights are not on this machine."""
    if cfg.weights == "random" or not cfg.enabled:
        return
    if cfg.weights == "imagenet":
        path = imagenet_weights_file()
        if not path.exists():
            raise ConfigError(
                f"cnn.weights=imagenet but {path} is missing; place torchvision's file {IMAGENET_WEIGHTS_NAME} "
                "there (nothing is downloaded at run time), give a state-dict path, or use cnn.weights=random"
            )
        return
    if not Path(cfg.weights).is_file():
        raise ConfigError(f"cnn.weights: no state-dict file at {cfg.weights}")
