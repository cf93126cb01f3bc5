"""mmqrec's public API: load a trained run once and serve recommendations from it.

    from mmqrec import Recommender

    rec = Recommender.load("runs/demo")
    for result in rec.recommend(["196", "186"], k=10):
        print(result.user_id, [item["title"] for item in result.items])
    print(rec.recommend_history(["50", "181", "100"], k=5).items)
"""

from recdata.threads import set_env_defaults

# Before torch loads OpenMP (when mmqrec is imported first): waiting threads sleep instead of
# spinning, which keeps serving fast on a shared machine. An explicit setting wins.
set_env_defaults()

from mmqrec.recommender import Recommendation, Recommender, format_table  # noqa: E402

__all__ = ["Recommendation", "Recommender", "format_table"]
