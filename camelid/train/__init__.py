"""Pretraining: the loop, the schedule, checkpoints (DCP) and metrics (MFU, energy, CO2)."""
