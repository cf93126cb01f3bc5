"""BBQ: behaviour-bind quantisation, the tokenizer half of BBQRec (method.md section 7).

* :mod:`tokenizer.bbq.config` — :class:`BBQConfig`, the ``tokenizer.bbq`` config section (no torch).
* :mod:`tokenizer.bbq.model` — :class:`~tokenizer.bbq.model.BBQTokenizer`, the model.
* :mod:`tokenizer.bbq.club` — the CLUB mutual-information upper bound it minimises.
* :mod:`tokenizer.bbq.train` — the training loop over content and user histories.
* :mod:`tokenizer.bbq.stage` — its fit routine for the ``tokenize`` stage (registered in
  :data:`tokenizer.registry.TOKENIZERS`).

Only the config is imported here: ``tokenizer/config.py`` nests :class:`BBQConfig`, and the
model modules import ``tokenizer/config.py``, so importing them here would be a cycle.
"""

from tokenizer.bbq.config import BBQConfig

__all__ = ["BBQConfig"]
