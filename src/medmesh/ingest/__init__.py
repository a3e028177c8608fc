"""Getting readings in: protocol adapters and formats feed one pipeline."""
