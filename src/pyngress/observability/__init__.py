"""Metrics, access log, admin API, dashboard (issue 8)."""
