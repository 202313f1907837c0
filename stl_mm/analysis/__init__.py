"""Measurement tools behind ``tools/analysis_tools``: :mod:`.benchmark` (throughput, latency,
peak memory), :mod:`.benchmark_report` (its tables and JSON report) and :mod:`.flops`
(parameters and FLOPs). Import them directly; nothing here is registered."""
