"""Care between visits: secure messages between a patient and their care team (docs/care.md)."""
