"""Running the API: uvicorn in the foreground (`fleetlens serve`)."""

from __future__ import annotations

import uvicorn

from fleetlens.api.app import create_app
from fleetlens.config import Config


def serve(cfg: Config, host: str, port: int) -> int:
    app = create_app(cfg.store.dir, cfg.api.tokens, max_points=cfg.api.max_points)
    # The access log has no secrets in it: tokens travel in the Authorization header.
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)
    return 0
