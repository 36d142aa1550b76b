"""What every sample source gives the agent.

A source is asked for one tick at a time and answers with the samples of each node it covers
(the simulator covers many nodes; NVML and dcgm-exporter sources cover their own node or the
exporters they scrape). Samples are schema-v1 dicts; fields the source cannot measure are None.
"""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    def collect(self, t: float, interval_s: float) -> list[tuple[str, list[dict]]]:
        """Samples for tick time t (epoch seconds): [(node name, [sample, ...]), ...]."""
        ...

    def close(self) -> None:
        """Release the library or connections the source holds."""
        ...
