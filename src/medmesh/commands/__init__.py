"""Command-line sub-apps of `medmesh`, one module per topic, registered in cli.py."""
