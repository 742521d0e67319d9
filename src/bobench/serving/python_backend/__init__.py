"""Versioned template files copied verbatim into generated Triton model repositories."""
