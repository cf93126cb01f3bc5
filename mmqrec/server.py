"""HTTP service over a trained run (``mmqrec serve RUN_DIR``): JSON API, OpenAPI docs and a page.

Routes (OpenAPI at ``/docs`` and ``/openapi.json``):

* ``GET /health`` — the run, catalogue and user counts, the ranker variant, batching counters.
* ``GET /users?offset=&limit=`` — user ids, for pickers.
* ``GET /users/{user_id}/history?last=`` — a known user's items, oldest first.
* ``GET /users/{user_id}/recommendations?k=&exclude_seen=`` — a known user's list; concurrent
  requests are micro-batched onto the models (:mod:`mmqrec.batching`).
* ``POST /recommendations`` — a list for an ad-hoc history ``{"items": [...], "k": 10}``.
* ``GET /items/{item_id}`` and ``GET /items/{item_id}/image`` — catalogue lookups; an image is
  served only from the catalogue's own image table (no path ever comes from the request).
* ``GET /`` — a page to pick a user and see their recent history and recommendations.

Every route first picks up items added by ``mmqrec add-items``, so all of them see the same
catalogue version (``/health`` names it). Unknown users or items answer 404, bad parameters 422
and bodies over the size limit 413, each with a one-line ``detail`` that never repeats a long
request value whole (:class:`mmqrec.limits.ServerLimits`). ``/docs`` loads Swagger UI from
assets installed with the package (``fastapi-offline``), so it works without internet.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime,
# and some of them are types built inside create_app from the limits.
import contextlib
import logging
from pathlib import Path
from typing import Annotated, Any, Union

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, StrictInt, StringConstraints

from mmqrec.batching import MicroBatcher
from mmqrec.limits import BodyLimit, ServerLimits, clip_detail
from mmqrec.recommender import Recommender, shown
from recdata.errors import DataError

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("static") / "index.html"
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".webp": "image/webp", ".gif": "image/gif"}


def _history_request(limits: ServerLimits) -> type[BaseModel]:
    """The body of ``POST /recommendations``; ids may be strings or integers, as in the Python
    API, up to the limits' lengths."""
    Id = Union[Annotated[str, StringConstraints(max_length=limits.max_id_chars)], StrictInt]  # noqa: UP007

    class HistoryRequest(BaseModel):
        """An ad-hoc history to recommend for."""

        items: list[Id] = Field(max_length=limits.max_history_items,  # type: ignore[valid-type]
                                description="item ids, oldest first")
        k: int = Field(10, ge=1, description="list length")
        exclude_seen: bool = Field(True, description="drop the history's items from the list")
        user_id: Id | None = Field(None,  # type: ignore[valid-type]
                                   description="rank the list as this known user (optional)")

    return HistoryRequest


def _validation_detail(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        at = next((p for p in first.get("loc", ()) if isinstance(p, int)), None)
        reason = (first.get("ctx") or {}).get("error", "not JSON")
        where = f" at character {at}" if at is not None else ""
        return f"request body is not valid JSON ({reason}{where})"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    return f"{where}: {first.get('msg', 'invalid request')}"


def _not_found(message: str) -> bool:
    return message.startswith("unknown user") or message.startswith("unknown item")


def create_app(rec: Recommender, *, max_batch: int = 64, max_wait_ms: float = 5.0,
               workers: int = 1, limits: ServerLimits | None = None) -> FastAPI:
    """The FastAPI application serving ``rec``: ``workers`` threads run batched model calls
    side by side (see :class:`mmqrec.batching.MicroBatcher`)."""
    limits = limits or ServerLimits()
    batcher = MicroBatcher(rec, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0,
                           workers=workers)
    history_request = _history_request(limits)
    UserId = Annotated[str, PathParam(max_length=limits.max_id_chars)]
    ItemId = Annotated[str, PathParam(max_length=limits.max_id_chars)]

    def same_catalogue() -> None:
        rec.refresh()  # items added since the last request, for every route alike

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        batcher.close()

    app = FastAPIOffline(title="mmqrec", version="1", lifespan=lifespan,
                         dependencies=[Depends(same_catalogue)],
                         description="Generative recommendation with multimodal semantic IDs.")
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.state.batcher = batcher

    @app.exception_handler(DataError)
    async def data_error(_: Request, exc: DataError) -> JSONResponse:
        message = clip_detail(str(exc), limits)
        return JSONResponse(status_code=404 if _not_found(message) else 422,
                            content={"detail": message})

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422,
                            content={"detail": clip_detail(_validation_detail(exc), limits)})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "run_dir": str(rec.run_dir), "users": len(rec.user_ids),
                "items": rec.n_items, "catalogue_version": rec.catalogue_version,
                "ranker": rec.ranker_variant, "workers": batcher.workers,
                "batches_served": batcher.batches_served,
                "requests_served": batcher.requests_served}

    @app.get("/users")
    def users(offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
        return {"total": len(rec.user_ids), "users": rec.user_ids[offset: offset + limit]}

    @app.get("/users/{user_id}/history")
    def history(user_id: UserId, last: int = Query(20, ge=0)) -> dict[str, Any]:
        return {"user_id": user_id, "items": rec.history(user_id, last=last)}

    @app.get("/users/{user_id}/recommendations")
    def recommend_user(user_id: UserId, k: int = Query(10, ge=1),
                       exclude_seen: bool = True) -> dict[str, Any]:
        rec.user_idx(user_id)  # 404 before queueing
        if k > rec.n_items:
            raise DataError(f"k must be at most the catalogue size {rec.n_items}, got {k}")
        return batcher.recommend(user_id, k=k, exclude_seen=exclude_seen).to_dict()

    @app.post("/recommendations")
    def recommend_history(body: history_request) -> dict[str, Any]:  # type: ignore[valid-type]
        return rec.recommend_history([str(i) for i in body.items], k=body.k,
                                     exclude_seen=body.exclude_seen,
                                     user_id=None if body.user_id is None else str(body.user_id)
                                     ).to_dict()

    @app.get("/items/{item_id}")
    def item(item_id: ItemId) -> dict[str, Any]:
        return rec.item(item_id)

    @app.get("/items/{item_id}/image")
    def image(item_id: ItemId) -> FileResponse:
        path = rec.image_path(item_id)
        if path is None or not path.is_file() or path.suffix.lower() not in IMAGE_TYPES:
            raise _no_image(item_id)
        return FileResponse(path, media_type=IMAGE_TYPES[path.suffix.lower()])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


def _no_image(item_id: str) -> DataError:
    return DataError(f"unknown item image: item {shown(item_id)} has no image in the catalogue")


def serve(*, run_dir: Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          variant: str | None = None, max_batch: int = 64, max_wait_ms: float = 5.0,
          threads: int | None = None, workers: int | None = None,
          limits: ServerLimits | None = None) -> None:
    """Load the run once and serve it until interrupted.

    ``threads``: torch intra-op threads of each model worker (default 1, or ``OMP_NUM_THREADS``);
    ``workers``: model calls run side by side (default: one per usable core).
    """
    import uvicorn

    from recdata.threads import apply_threads, usable_cores

    threads = apply_threads(requested=threads, role="serve")
    workers = workers or usable_cores()
    rec = Recommender.load(run_dir, device=device, variant=variant)
    app = create_app(rec, max_batch=max_batch, max_wait_ms=max_wait_ms, workers=workers,
                     limits=limits)
    log.info("serving %s (%d items, %d users; %d model workers of %d torch thread%s) on "
             "http://%s:%d (docs at /docs)", run_dir, rec.n_items, len(rec.user_ids), workers,
             threads, "" if threads == 1 else "s", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
