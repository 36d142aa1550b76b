"""Running the API: uvicorn in the foreground (`fleetlens serve`)."""

from __future__ import annotations

import uvicorn

from fleetlens.api.app import create_app
from fleetlens.config import Config


def serve(cfg: Config, host: str, port: int) -> int:
    # [definitions] gpus_per_node, where the config has it: the report's whole-node ledger rule.
    app = create_app(cfg.store.dir, cfg.api.tokens, max_points=cfg.api.max_points,
                     gpus_per_node=getattr(cfg.definitions, "gpus_per_node", 8))
    # The access log has no secrets in it: tokens travel in the Authorization header.
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)
    return 0
