"""slimbert plugged into transformers, all in one place (run on ``import slimbert``):

* ``attention.py``: the ``"slimbert"`` attention function and its mask function (AttentionInterface);
* ``pipeline.py``: the ``extractive-question-answering`` pipeline;
* the compact model (``SlimBertConfig``, ``SlimBertForQuestionAnswering``) with the Auto classes.
"""

from transformers import AutoConfig, AutoModelForQuestionAnswering

import slimbert.hf.attention  # noqa: F401  (registers the attention + mask functions)
import slimbert.hf.pipeline  # noqa: F401  (registers the pipeline)
from slimbert.models.compact import SlimBertConfig, SlimBertForQuestionAnswering

AutoConfig.register(SlimBertConfig.model_type, SlimBertConfig)
AutoModelForQuestionAnswering.register(SlimBertConfig, SlimBertForQuestionAnswering)
