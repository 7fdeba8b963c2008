"""Chaos tests: a workload that records its history, a nemesis, and a checker for Jepsen's
properties (no acknowledged write lost, nothing read twice at two offsets, no read of a failed
write, consumers never skip or go back), plus torn writes, bad input and process hygiene."""
