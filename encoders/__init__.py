"""Frozen text and image encoders: every item → one embedding per modality, cached per run.

* `encoders.stage.run` — the `encode` stage (artefacts under RUN_DIR/embeddings/);
* `encoders.config.EncoderConfig` — its configuration;
* `encoders.text.TextEncoder`, `encoders.vision.VisionEncoder` — the two encoders;
* `encoders.template` — item text from a template, dropping the parts with null fields;
* `python -m encoders RUN_DIR` — run the stage alone (works under `torchrun`);
* `python -m encoders.neighbours RUN_DIR --titles ...` — nearest neighbours as a sanity check.
"""
