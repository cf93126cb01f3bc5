"""The ``evaluate`` stage: every system of a run scored on one split, and the report.

It trains the baselines on the run's leave-one-out split, scores every system's ranked lists
against the whole catalogue with the same metrics, popularity strata and bootstrap intervals,
merges what every stage measured into ``metrics.json`` and renders ``report/report.md`` and a
self-contained ``report/report.html``.

Main modules:

* :mod:`~eval.stage` — the stage itself; :mod:`~eval.config` — ``EvalConfig``;
* :mod:`~eval.baselines` — the baselines' registry, among them most-popular
  (:mod:`~eval.popularity`) and RecBole's SASRec, contained in :mod:`~eval.recbole_sasrec`;
* :mod:`~eval.ranked` — ranked lists and their parquet files;
* :mod:`~eval.stats` — bootstrap intervals and paired comparisons over users;
* :mod:`~eval.sections` — readers for what the earlier stages left in the run directory;
* :mod:`~eval.report`, :mod:`~eval.render`, :mod:`~eval.charts` — the report, its Markdown and
  HTML renderers and its figures; :mod:`~eval.compare` — two runs side by side.
"""
