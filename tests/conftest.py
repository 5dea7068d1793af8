"""Shared fixtures: tiny random BERT/RoBERTa QA models, the vendored tokenizer, ../shared paths."""

import os
from pathlib import Path

import pytest
import torch

# Triton decides at @triton.jit time whether to interpret, so this must precede any kernels import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DEMO = ROOT / "slimbert" / "demo"


def tiny_config(arch: str, **kw):
    from transformers import BertConfig, RobertaConfig

    common = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    common.update(kw)
    if arch == "bert":
        return BertConfig(vocab_size=30522, **common)
    return RobertaConfig(vocab_size=120, pad_token_id=1, type_vocab_size=1, **common)


def tiny_model(arch: str, seed: int = 0, **kw):
    from transformers import BertForQuestionAnswering, RobertaForQuestionAnswering

    torch.manual_seed(seed)
    cls = BertForQuestionAnswering if arch == "bert" else RobertaForQuestionAnswering
    return cls(tiny_config(arch, **kw)).eval()


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Latency tables and teacher logits go to a folder of this session, not the user's ~/.cache."""
    os.environ["SLIMBERT_CACHE"] = str(tmp_path_factory.mktemp("slimbert-cache"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["bert", "roberta"])
def arch(request):
    return request.param


@pytest.fixture
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO / "teacher")


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    """A tiny random BERT QA model saved with the vendored tokenizer: a folder the CLI can load."""
    path = tmp_path / "teacher"
    tiny_model("bert").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def squad_files():
    """The vendored SQuAD 2.0 slices (train, dev), always present."""
    return str(DEMO / "squad2-train-slice.json"), str(DEMO / "squad2-dev-slice.json")


def require_shared(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the real-data tests need ../shared beside the project root")
    return path


def random_batch(vocab: int, batch: int = 2, seq: int = 11, pad_from: int | None = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    if pad_from is not None:
        mask[-1, pad_from:] = 0
    return {"input_ids": ids, "attention_mask": mask}
