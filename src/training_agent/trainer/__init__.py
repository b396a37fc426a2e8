"""The trainer: download → prepare → train → upload → record, for one project."""
