"""Adapters: the edges where cardvault touches Redis, key material and the outside world."""
