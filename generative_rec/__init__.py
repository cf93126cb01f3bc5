"""The generative retriever: a T5 encoder-decoder that reads a user's history as semantic-ID
tokens and decodes the next item's SID, searching only SIDs of real items.

Stage ``train-retriever`` (:mod:`generative_rec.stage`) trains it on a run's IDs, evaluates it
on the test users and saves the candidate lists the ranker and the evaluation read.

Main modules:

* :mod:`~generative_rec.config` — ``RetrieverConfig``, the ``retriever:`` section of a config;
* :mod:`~generative_rec.vocab`, :mod:`~generative_rec.data` — the token vocabulary and the
  training and evaluation examples built from the leave-one-out split;
* :mod:`~generative_rec.model`, :mod:`~generative_rec.train` — the network and its training
  loop (DDP under ``torchrun`` in :mod:`~generative_rec.ddp`);
* :mod:`~generative_rec.trie`, :mod:`~generative_rec.decoding` — the vectorised SID trie and
  the constrained beam search over it (slow oracles in
  :mod:`~generative_rec.reference_decoding`);
* :mod:`~generative_rec.priors`, :mod:`~generative_rec.transitions`,
  :mod:`~generative_rec.content` — the transition and content priors that re-order the final
  candidates, with weights fitted on validation users;
* :mod:`~generative_rec.inference` — load a trained retriever and recommend for histories
  (what the evaluation and serving import);
* :mod:`~generative_rec.stage2` — behaviour-aware fine-tuning of the tokenizer through soft
  indexing;
* :mod:`generative_rec.bbqrec` — BBQRec, a SASRec-style recommender with a SID-similarity
  attention bias.
"""
