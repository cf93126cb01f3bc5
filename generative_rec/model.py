"""The generative retriever: a T5 encoder-decoder over semantic-ID tokens, trained from scratch.

The network is ``transformers.T5ForConditionalGeneration`` built from a :class:`RetrieverConfig`
(no pretrained weights). The vocabulary (``generative_rec.vocab.SidVocab``) holds pad (= decoder
start), eos, the hashed user tokens and one token range per SID position. The encoder reads
``[user] + SID tokens of the last <= max_history items + [eos]``; the decoder emits the next item's
SID, exactly ``L`` tokens after the decoder start (no eos: the length is fixed).

Input and output embeddings are tied (T5 default), so a code token has one vector ``E[offset + c]``
used both to read it and to score it. Stage 2 feeds ``soft_onehot @ E[offset : offset + K]``
instead of an integer lookup (:func:`soft_position_embeddings`), which is why the helpers below
accept ``inputs_embeds``.

Weights are stored as safetensors without the tied aliases (``model_state``/``load_model_state``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration

from generative_rec.config import RetrieverConfig
from recdata.errors import DataError

PAD_ID = 0
EOS_ID = 1
# Aliases of ``shared.weight`` when embeddings are tied; saved once under ``shared.weight``.
TIED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")


def t5_config(*, cfg: RetrieverConfig, vocab_size: int) -> T5Config:
    """The ``T5Config`` of a retriever with ``vocab_size`` tokens."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        dropout_rate=cfg.dropout,
        feed_forward_proj=cfg.feed_forward_proj,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
        tie_word_embeddings=True,
        use_cache=True,
    )


def build_model(*, cfg: RetrieverConfig, vocab_size: int) -> T5ForConditionalGeneration:
    """A freshly initialised retriever (seed the global RNG first for reproducible weights)."""
    model = T5ForConditionalGeneration(t5_config(cfg=cfg, vocab_size=vocab_size))
    # T5 initialises token embeddings with std 1 for its scaled tied head; keep that.
    return model


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the tied aliases (safetensors refuses shared storage)."""
    state = unwrap(model).state_dict()
    return {k: v for k, v in state.items() if k not in TIED_KEYS}


def load_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load :func:`model_state` output; any missing key other than a tied alias is an error."""
    result = unwrap(model).load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if k not in TIED_KEYS]
    if missing or result.unexpected_keys:
        raise DataError(
            f"retriever weights do not match the model (missing {missing[:3]}, "
            f"unexpected {list(result.unexpected_keys)[:3]})"
        )


def unwrap(model: torch.nn.Module) -> T5ForConditionalGeneration:
    """The bare T5 model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model  # type: ignore[return-value]


def shift_right(labels: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for teacher forcing: ``[start, y_0, ..., y_{L-2}]``."""
    start = torch.full_like(labels[:, :1], PAD_ID)
    return torch.cat([start, labels[:, :-1]], dim=1)


def sid_logits(
    model: torch.nn.Module,
    *,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    decoder_input_ids: torch.Tensor | None = None,
    decoder_inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-forced next-token logits ``[B, L, V]`` (call through the DDP wrapper if any)."""
    out = model(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        decoder_inputs_embeds=decoder_inputs_embeds,
        use_cache=False,
    )
    return out.logits


def retrieval_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of the target SID (every position counts, no padding)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1))


def soft_position_embeddings(
    embedding: torch.Tensor, onehot: torch.Tensor, offset: int
) -> torch.Tensor:
    """``onehot @ E[offset : offset + K]`` for one SID position.

    ``onehot`` is ``[N, K]``: exactly one-hot in the forward pass (straight-through soft
    indexing) so the result equals the integer lookup, while its gradient reaches the tokenizer.
    """
    k = onehot.size(-1)
    return onehot.to(embedding.dtype) @ embedding[offset : offset + k]
