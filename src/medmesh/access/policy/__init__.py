"""What a principal may see: the decision (care team, consent, break-glass, organisation),
SMART scopes and who may hold them, whether a subscriber may still be notified."""
