"""Latency and accuracy measurement over Runners."""
