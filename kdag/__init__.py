"""kdag: run containers on a schedule, in order, and show clearly what happened."""

__version__ = "0.1.0"
