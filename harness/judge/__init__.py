"""Judging: metrics, the metric -> threshold table, Records and the verdict, threshold profiles, the planted-defect catalog."""
