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

Unknown users or items answer 404 and bad parameters 422, each with a one-line ``detail``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from mmqrec.batching import MicroBatcher
from mmqrec.recommender import Recommender
from recdata.errors import DataError

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("static") / "index.html"
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".webp": "image/webp", ".gif": "image/gif"}


class HistoryRequest(BaseModel):
    """An ad-hoc history to recommend for."""

    items: list[str] = Field(description="item ids, oldest first")
    k: int = Field(10, ge=1, description="list length")
    exclude_seen: bool = Field(True, description="drop the history's items from the list")
    user_id: str | None = Field(None, description="rank the list as this known user (optional)")


def _not_found(message: str) -> bool:
    return message.startswith("unknown user") or message.startswith("unknown item")


def create_app(rec: Recommender, *, max_batch: int = 64, max_wait_ms: float = 5.0) -> FastAPI:
    """The FastAPI application serving ``rec``."""
    batcher = MicroBatcher(rec, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        batcher.close()

    app = FastAPI(title="mmqrec", version="1", lifespan=lifespan,
                  description="Generative recommendation with multimodal semantic IDs.")
    app.state.batcher = batcher

    @app.exception_handler(DataError)
    async def data_error(_: Request, exc: DataError) -> JSONResponse:
        message = str(exc).splitlines()[0]
        return JSONResponse(status_code=404 if _not_found(message) else 422,
                            content={"detail": message})

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return JSONResponse(status_code=422,
                            content={"detail": f"{where}: {first.get('msg', 'invalid request')}"})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "run_dir": str(rec.run_dir), "users": len(rec.user_ids),
                "items": rec.n_items, "ranker": rec.ranker_variant,
                "batches_served": batcher.batches_served,
                "requests_served": batcher.requests_served}

    @app.get("/users")
    def users(offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
        return {"total": len(rec.user_ids), "users": rec.user_ids[offset: offset + limit]}

    @app.get("/users/{user_id}/history")
    def history(user_id: str, last: int = Query(20, ge=0)) -> dict[str, Any]:
        return {"user_id": user_id, "items": rec.history(user_id, last=last)}

    @app.get("/users/{user_id}/recommendations")
    def recommend_user(user_id: str, k: int = Query(10, ge=1),
                       exclude_seen: bool = True) -> dict[str, Any]:
        rec.user_idx(user_id)  # 404 before queueing
        if k > rec.n_items:
            raise DataError(f"k must be at most the catalogue size {rec.n_items}, got {k}")
        return batcher.recommend(user_id, k=k, exclude_seen=exclude_seen).to_dict()

    @app.post("/recommendations")
    def recommend_history(body: HistoryRequest) -> dict[str, Any]:
        return rec.recommend_history(body.items, k=body.k, exclude_seen=body.exclude_seen,
                                     user_id=body.user_id).to_dict()

    @app.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, Any]:
        return rec.item(item_id)

    @app.get("/items/{item_id}/image")
    def image(item_id: str) -> FileResponse:
        path = rec.image_path(item_id)
        if path is None or not path.is_file() or path.suffix.lower() not in IMAGE_TYPES:
            raise _no_image(item_id)
        return FileResponse(path, media_type=IMAGE_TYPES[path.suffix.lower()])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


def _no_image(item_id: str) -> DataError:
    return DataError(f"unknown item image: item {item_id!r} has no image in the catalogue")


def serve(*, run_dir: Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          variant: str | None = None, max_batch: int = 64, max_wait_ms: float = 5.0) -> None:
    """Load the run once and serve it until interrupted."""
    import uvicorn

    rec = Recommender.load(run_dir, device=device, variant=variant)
    app = create_app(rec, max_batch=max_batch, max_wait_ms=max_wait_ms)
    log.info("serving %s on http://%s:%d (docs at /docs)", run_dir, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
