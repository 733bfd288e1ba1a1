"""`tutor serve`: one OpenAI-compatible endpoint for every subject's adapters on one base model (app.py, backend.py)."""
