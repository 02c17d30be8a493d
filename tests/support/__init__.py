"""Test support: real redis-server processes, real cardvault processes, leak scanning."""
