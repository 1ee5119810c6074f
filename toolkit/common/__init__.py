"""Helpers every part of the toolkit uses: atomic writes, log lines, the machine record, markdown tables, one-line messages, plots."""
