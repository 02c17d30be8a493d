"""The domain layer: pure-Python rules about cards, tokens and agencies (no I/O, no web, no Redis)."""
