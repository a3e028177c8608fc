"""Encryption at rest: per-patient data keys (AES-256-GCM) wrapped by a master key, kept in a
key store outside the main database so destroying a key makes every copy of the patient's
ciphertext unreadable (crypto-shredding); master key rotation; signatures."""
