"""Data files of the care package (the RPM code sets)."""
