"""Reports for people and machines: text tables, JSON/CSV files, figures and an HTML page.

Import by name: ``import graphpai.report``.
"""

from .tables import format_table, write_csv, write_json

__all__ = ["format_table", "write_json", "write_csv"]
