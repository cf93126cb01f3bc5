"""BBQRec: SASRec with self-attention reweighted by the discretised similarity of semantic IDs.

``generative_rec.bbqrec.stage.run(cfg=BBQRecConfig(...), run_dir=...)`` trains on a run directory
(data/ and tokenizer/semantic_ids.parquet) and writes ``RUN_DIR/<cfg.name>/``.
"""
