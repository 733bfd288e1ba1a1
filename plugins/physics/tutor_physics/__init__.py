"""Physics for tutor: Cambridge International AS & A Level (9702) and IGCSE (0625).

A subject by convention: everything lives in the files beside this one, which
tutor reads when it needs them. subject.toml holds the subject (topics,
levels), types.toml the question types and their answering guides,
formats.toml the circuitikz format, bank/ the sample bank and templates/ the
prompt overrides.
"""
