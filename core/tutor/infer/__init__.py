"""Inference: generation from the base model plus a subject's adapters, shared by ask, eval and (later) the tutor modes and serving."""
