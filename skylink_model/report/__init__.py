"""Tables, figures and pictures of SkyLink evaluations (arXiv 2603.08063: Table 1, Figures 2, 3a and 4).

* :mod:`.tables` — Table 1 from any set of evaluation JSONs (``skyrank table``);
* :mod:`.sweep` — ablation grids into evaluation JSONs and a plot per knob (``skyrank sweep``);
* :mod:`.sheets`, :mod:`.plots`, :mod:`.page` — contact sheets, R@K curves and ``report.html`` (``skyrank show``).
"""

from __future__ import annotations

from skylink_model.report.page import ReportResult, write_report
from skylink_model.report.sweep import SWEEPABLE, SweepResult, run_sweep
from skylink_model.report.tables import FORMATS, build_table, format_table

__all__ = [
    "FORMATS",
    "SWEEPABLE",
    "ReportResult",
    "SweepResult",
    "build_table",
    "format_table",
    "run_sweep",
    "write_report",
]
