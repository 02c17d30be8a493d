"""cardvault: a payment-card tokenization vault for state agencies.

Card numbers come in over TLS, tokens go out; the card stays encrypted in
Redis and only ever leaves toward a payment processor.
"""

__version__ = "0.1.0"
