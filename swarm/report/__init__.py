"""`swarm report`: reads the metrics.json files below a results root and writes
summary.json, per_class_accuracy.csv and PNG plots (see `swarm.report.cli`)."""

from swarm.report.collect import NodeRun, ReportError, collect, drop_short
from swarm.report.summary import summarise

__all__ = ["NodeRun", "ReportError", "collect", "drop_short", "summarise"]
