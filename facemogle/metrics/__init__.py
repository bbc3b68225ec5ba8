"""Metrics: mask consistency, attribute (text) consistency, Fréchet distance and KID, and the evaluation report."""
