"""Simulated patients and devices that talk to medmesh over its real protocols."""
