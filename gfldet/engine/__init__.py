"""Training and evaluation: ``gfldet.engine.train.train(cfg)``, ``gfldet.engine.evaluate.evaluate(model, dataset)``,
training checkpoints (``checkpoint``), torchrun / DDP helpers (``distributed``), the checks before a run
(``preflight``) and the schedule chosen for it (``recipe``), the device a run or command uses (``device``)."""
from . import amp, checkpoint, device, distributed, ema, evaluate, norm_init, preflight, recipe, train

__all__ = ["amp", "checkpoint", "device", "distributed", "ema", "evaluate", "norm_init", "preflight", "recipe",
           "train"]
