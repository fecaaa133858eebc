"""Reports of studies: ``hpo report`` (one study) and ``hpo compare`` (several side by side).

Self-contained HTML (plotly.js embedded, opens offline) plus Markdown, read from the storage.
"""

from hpo.report.study_report import Report, build_report

__all__ = ["Report", "build_report"]
