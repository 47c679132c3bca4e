"""The HTTP API of SPEC §5 (Sendcloud v2 envelopes, Basic auth by API key pair)."""
