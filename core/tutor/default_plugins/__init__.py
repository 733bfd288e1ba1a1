"""The core's own pieces, registered through the same hooks as any outside plugin."""
