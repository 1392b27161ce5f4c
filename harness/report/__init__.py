"""Reporting: summary.json (summary) and the HTML report (html), both from the same Records."""
