"""Node-side collectors: sources of schema-v1 samples and the agent that publishes them.

Nothing in this package may import Polars or DuckDB: the agent runs on every GPU node.
"""
