"""`fleetlens serve`: the HTTP report API over the store (FastAPI + uvicorn).

Imported only by `fleetlens serve` and `fleetlens api ...`: the agent never loads the web stack.
"""
