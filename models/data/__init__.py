"""Shipped NLU data (intent phrases, held-out set, regions); a package so the YAML ships in the wheel."""
