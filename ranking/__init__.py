"""CTR ranker with semantic-ID features and two-stage (retrieve → re-rank) recommendation.

Modules: ``config`` (RankerConfig), ``features`` (CTR rows, histories, user features),
``item_repr`` (ItemID / SID / both item vectors), ``models`` (DIN, registry), ``train``,
``evaluate`` (AUC / GAUC / log-loss per stratum), ``two_stage`` (re-ranking, score fusion),
``soft_index`` (optional stage 2 through the CTR loss), ``checkpoint``, ``recommend``
(``mmqrec recommend``) and ``stage`` (the ``train-ranker`` stage).
"""
