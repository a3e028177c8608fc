"""Command-line sub-apps, each registered in cli.py with one line."""
