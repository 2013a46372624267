"""Regulatory DNA: data, oracles, motifs and metrics."""
