"""slimbert: structured pruning of BERT/RoBERTa question-answering models.

    import slimbert
    result = slimbert.prune(model, slimbert.PruneConfig(target=0.5), train_data=..., eval_data=...)

Importing slimbert plugs it into transformers (slimbert/hf/): its attention function, the compact
model with the Auto classes, and the ``extractive-question-answering`` pipeline.

The data path, one folder per step: ``tasks/`` (data, windows, metrics) -> ``pruning/methods/``
(find the structure) -> ``pruning/collapse.py`` -> ``models/compact.py`` -> ``train/`` (fine-tune)
-> evaluate; ``api.py`` (``prune``) walks it top to bottom.
"""

import slimbert.hf  # noqa: F401  (registers the attention function, Auto classes and pipeline)
from slimbert.api import PruneResult, prune
from slimbert.config import ConfigError, PruneConfig, TrainConfig
from slimbert.io import ModelLoadError
from slimbert.models.answer_type import nq_model_from
from slimbert.models.compact import SlimBertConfig, SlimBertForQuestionAnswering
from slimbert.pruning.collapse import collapse
from slimbert.pruning.gates import add_gates, deterministic_size, expected_size, get_gates, snap_gates
from slimbert.pruning.methods.posttrain import posttrain_prune
from slimbert.tasks.nq.data import load_nq, squad_to_nq
from slimbert.tasks.nq.evaluate import evaluate_nq
from slimbert.tasks.squad.data import DataError, load_squad
from slimbert.tasks.squad.evaluate import evaluate
from slimbert.train.checkpoint import CheckpointError

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ModelLoadError",
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
