"""The stream job: Kafka -> Polars micro-batches -> per-GPU-minute rollups -> Parquet store."""
