"""Pure domain: what parcelhook means, with no I/O and no framework imports."""
