"""Economics for tutor: Cambridge International AS & A Level (9708) and IGCSE (0455).

A subject by convention: everything lives in the files beside this one, which
tutor reads when it needs them. subject.toml holds the subject (topics,
levels), types.toml the question types and their answering guides,
formats.toml the `econ-graph` format, bank/ the sample bank and templates/ the
prompt overrides.
"""
