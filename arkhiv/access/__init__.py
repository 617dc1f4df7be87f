"""Access: derivatives in many formats, DIPs, location coarsening, metadata stripping,
OAI-PMH, IIIF."""
