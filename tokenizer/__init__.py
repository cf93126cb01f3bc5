"""Semantic-ID tokenizers: MMQ (stage 1 + the soft-indexing hooks for stage 2) and baselines.

Stage 1 (``tokenizer.stage.run``) fits a tokenizer from ``TOKENIZERS`` (name -> model class,
config section, fit routine) on the catalogue embeddings (BBQ: and the training histories) and
writes ``run_dir/tokenizer/{model.safetensors, config.json, semantic_ids.parquet,
metrics.json}``. Downstream code reads the ID table with ``SemanticIds.from_run_dir(run_dir)``.

Stage-2 API (behaviour-aware fine-tuning through soft indexing, method.md section 4)::

    from tokenizer import load_tokenizer, load_inputs, reassign_ids

    tok = load_tokenizer(run_dir, device=dev).train()   # an nn.Module
    inputs = load_inputs(run_dir).to(dev)
    text, image, text_mask, image_mask = inputs.rows(batch_item_idx)
    # one [B, K_p] tensor per raw position p (not the collision position): the forward value is
    # exactly one_hot(hard code); the gradient is that of softmax(similarity / tau).
    ind = tok.soft_codes(text, image, text_mask, image_mask, tau=1.0)
    token_emb_p = ind[p] @ embedding_table_p            # instead of an integer lookup
    rec = tok.reconstruction_losses(text, image, text_mask, image_mask)
    loss = downstream_loss + 0.5 * rec["recon"] + 0.5 * rec["aux"]
    # after fine-tuning: new hard IDs, collisions re-resolved, artefacts rewritten
    metrics = reassign_ids(model=tok.eval(), run_dir=run_dir)

All methods take raw embeddings as stored in ``run_dir/embeddings`` (the tokenizer standardises
them itself) and boolean masks; ``image``/``image_mask`` are None for text-only runs. With
``codebook_update="ema"`` (MMQ default) the codewords are buffers that ``reconstruction_losses``
updates by moving average while the module is in training mode (in eval mode they stay fixed);
only the experts, gates, placeholders and decoders take gradient. With ``codebook_update="loss"``
(and always for RQ-VAE) the codewords are parameters and the soft codes' gradient reaches them. The collision token is not soft: take it from the
resolved table (``SemanticIds.codes[:, -1]``). ``rqkmeans`` has nothing trainable.
"""

from tokenizer.config import TokenizerConfig
from tokenizer.export import reassign_ids
from tokenizer.inputs import TokenizerInputs, load_inputs, make_inputs
from tokenizer.registry import TOKENIZERS, TokenizerSpec, build_tokenizer, load_tokenizer
from tokenizer.sid import SemanticIds, resolve_collisions

__all__ = [
    "TOKENIZERS",
    "SemanticIds",
    "TokenizerConfig",
    "TokenizerInputs",
    "TokenizerSpec",
    "build_tokenizer",
    "load_inputs",
    "load_tokenizer",
    "make_inputs",
    "reassign_ids",
    "resolve_collisions",
]
