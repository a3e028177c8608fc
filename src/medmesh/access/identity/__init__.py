"""Who is calling: accounts and their sign-in (passwords, TOTP, lockout), principals,
bearer tokens, device and API secrets, broker password files."""
