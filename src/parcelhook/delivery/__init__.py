"""Outbound HTTP: the only package that talks to webhook endpoints."""
