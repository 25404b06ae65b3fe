"""The training engine: one model-function contract, optimizer, jitted steps, state and one epoch loop
(checkpoints with exact resume and run identity, metrics log, NaN/Inf guard, progress).

Layers: :mod:`.model` (the ``model_fn`` contract), :mod:`.steps` (optimizer, train/eval steps, evaluation),
:mod:`.state` (initial state), :mod:`.run` (a run's directory: checkpoints, identity, log), :mod:`.loop`
(the epoch loop) and :mod:`.supervised` (``fit`` / ``run_epochs`` for one model). Retraining
(:mod:`nasjax.train`), the training-based estimators and the one-shot search compose these.
"""

from nasjax.errors import DivergenceError
from nasjax.training.loop import EpochEnd, LoopResult, check_batch_size, run_loop
from nasjax.training.model import ModelFn, network_model_fn, plain_model_fn
from nasjax.training.run import Position, Run, config_to_dict
from nasjax.training.state import init_key, init_state, state_from_variables
from nasjax.training.steps import (cosine_schedule, evaluate, make_eval_step, make_optimizer, make_train_step,
                                   sgd_optimizer)
from nasjax.training.supervised import FitResult, fit, run_epochs

__all__ = ["DivergenceError", "EpochEnd", "FitResult", "LoopResult", "ModelFn", "Position", "Run",
           "check_batch_size", "config_to_dict", "cosine_schedule", "evaluate", "fit", "init_key", "init_state",
           "make_eval_step", "make_optimizer", "make_train_step", "network_model_fn", "plain_model_fn",
           "run_epochs", "run_loop", "sgd_optimizer", "state_from_variables"]
