"""The ``extractive-question-answering`` pipeline (transformers 5 dropped ``question-answering``).

    qa = transformers.pipeline("extractive-question-answering", model="runs/p50")
    qa(question="Who wrote it?", context="...")  # {"answer", "score", "null_score_diff"}

Registered on ``import slimbert`` for any BERT/RoBERTa QA model, pruned or not. It windows the
context, runs the model and post-processes exactly like ``slimbert eval``: the answer is "" when
the null score beats the best span by more than ``null_threshold``. ``score`` is the best span's
start+end logit; ``null_score_diff`` is null score minus that (higher: more likely unanswerable).
"""

from __future__ import annotations

import numpy as np
from transformers import AutoModelForQuestionAnswering, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from slimbert.models.arch import PAD_LOGIT
from slimbert.tasks.base import MODEL_INPUTS
from slimbert.tasks.squad.data import context_offsets, tokenize_windows
from slimbert.tasks.squad.metric import postprocess_predictions

TASK = "extractive-question-answering"


class ExtractiveQAPipeline(Pipeline):
    _load_tokenizer = True

    def __call__(self, inputs=None, *, question=None, context=None, **kwargs):
        if inputs is None:
            if question is None or context is None:
                raise ValueError("give question= and context= (or a dict / list of dicts with both)")
            if isinstance(question, list):
                inputs = [{"question": q, "context": c} for q, c in zip(question, context)]
            else:
                inputs = {"question": question, "context": context}
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, max_length=None, doc_stride=None, null_threshold=None, n_best=None, max_answer_len=None, **kwargs):
        pre = {k: v for k, v in dict(max_length=max_length, doc_stride=doc_stride).items() if v is not None}
        post = {
            k: v
            for k, v in dict(null_threshold=null_threshold, n_best=n_best, max_answer_len=max_answer_len).items()
            if v is not None
        }
        return pre, {}, post

    def preprocess(self, inputs, max_length: int = 384, doc_stride: int = 128):
        if not isinstance(inputs, dict) or not {"question", "context"} <= set(inputs):
            raise ValueError("each input must be a dict with 'question' and 'context'")
        enc = tokenize_windows(
            self.tokenizer, [inputs["question"]], [inputs["context"]], max_length, doc_stride, padding=True, return_tensors="pt"
        )
        offsets = [context_offsets(enc, i) for i in range(len(enc["input_ids"]))]
        model_inputs = {k: enc[k] for k in MODEL_INPUTS if k in enc}
        return {"model_inputs": model_inputs, "offsets": offsets, "context": inputs["context"]}

    def _forward(self, batch):
        out = self.model(**batch["model_inputs"])
        keep = batch["model_inputs"]["attention_mask"].bool()
        start = out.start_logits.masked_fill(~keep, PAD_LOGIT)
        end = out.end_logits.masked_fill(~keep, PAD_LOGIT)
        return {"start": start, "end": end, "offsets": batch["offsets"], "context": batch["context"]}

    def postprocess(self, out, null_threshold: float = 0.0, n_best: int = 20, max_answer_len: int = 30):
        features = [{"example_id": "q", "offset_mapping": o} for o in out["offsets"]]
        start, end = out["start"].float().cpu().numpy(), out["end"].float().cpu().numpy()
        preds, diff, span = postprocess_predictions(
            [{"id": "q", "context": out["context"]}], features, start, end, n_best, max_answer_len, null_threshold
        )
        return {
            "answer": preds["q"],
            "score": float(span["q"]) if np.isfinite(span["q"]) else None,
            "null_score_diff": float(diff["q"]) if np.isfinite(diff["q"]) else None,
        }


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ExtractiveQAPipeline, pt_model=AutoModelForQuestionAnswering)
