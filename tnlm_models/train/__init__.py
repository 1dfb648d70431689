"""Pre-training and fine-tuning of MPOBERT: ``train``, ``evaluate``, ``TrainConfig``.

Note that ``tnlm_models.train`` is the function once the package is imported; import the
pieces of this subpackage from their modules (``from tnlm_models.train.config import
TrainConfig``) or from here (``from tnlm_models.train import TrainConfig``).
"""

from .checkpoint import load_model_weights, resolve_checkpoint, save_checkpoint
from .config import DEFAULT_MODEL, TrainConfig, load_config
from .evaluation import evaluate, evaluate_model
from .loop import TrainResult, train
from .optim import build_optimizer, parameter_groups
from .plot import plot_run, read_metrics
from .predict import predict
from .schedule import lr_factor

__all__ = [
    "DEFAULT_MODEL",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "evaluate",
    "evaluate_model",
    "load_config",
    "load_model_weights",
    "lr_factor",
    "parameter_groups",
    "plot_run",
    "predict",
    "read_metrics",
    "resolve_checkpoint",
    "save_checkpoint",
    "train",
]
