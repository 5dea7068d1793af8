"""slimbert: structured pruning of BERT/RoBERTa question-answering models.

    import slimbert
    result = slimbert.prune(model, slimbert.PruneConfig(target=0.5), train_data=..., eval_data=...)

Importing slimbert registers its attention function, the compact model with the Auto classes, and
the ``extractive-question-answering`` pipeline.
"""

from . import attention  # noqa: F401  (registers the "slimbert" attention + mask functions)
from . import pipeline  # noqa: F401  (registers the "extractive-question-answering" pipeline)
from .collapse import collapse
from .compact import SlimBertConfig, SlimBertForQuestionAnswering
from .config import PruneConfig, TrainConfig
from .data import load_squad
from .evaluate import evaluate
from .gates import add_gates, deterministic_size, expected_size, get_gates, snap_gates
from .nq import load_nq, squad_to_nq
from .nq_evaluate import evaluate_nq
from .nq_model import nq_model_from
from .posttrain import posttrain_prune
from .train import PruneResult, prune

__all__ = [
    "PruneConfig",
    "PruneResult",
    "TrainConfig",
    "SlimBertConfig",
    "SlimBertForQuestionAnswering",
    "add_gates",
    "collapse",
    "deterministic_size",
    "evaluate",
    "evaluate_nq",
    "expected_size",
    "get_gates",
    "load_nq",
    "load_squad",
    "nq_model_from",
    "posttrain_prune",
    "prune",
    "snap_gates",
    "squad_to_nq",
]
__version__ = "0.1.0"
