"""OAuth 2.0 for partners' systems: SMART Backend Services (client assertions, client keys,
the token exchange) and the SMART discovery document."""
