"""Report: what a person reads.

Lives here: console tables, CSV and Markdown (:mod:`.tables`), the self-contained HTML report
and its charts (:mod:`.html`), comparisons of results files (:mod:`.compare`) and the console
views of ``fastprof env``, ``monitor`` and ``selftest`` (:mod:`.env`, :mod:`.monitor`,
:mod:`.selftest`).

May import results, analysis and capture (for data types and environment warnings); never
measure or cli.
"""

from fastprof.report.html import html_report, write_html
from fastprof.report.tables import (
    DEFAULT_METRICS,
    all_warnings,
    available_metrics,
    check_metrics,
    check_stats,
    markdown,
    print_console,
    table_data,
    write_csv,
    write_markdown,
)

__all__ = ["DEFAULT_METRICS", "all_warnings", "available_metrics", "check_metrics", "check_stats", "html_report",
           "markdown", "print_console", "table_data", "write_csv", "write_html", "write_markdown"]
