"""Keys, encryption, tokens and the tamper-evident audit-log chain."""
