"""Data pipelines. Importing the package registers the sequence tokenizers with
`load_tokenizer` (data/dna_tokenizer.py), so a DNA run's tokenizer folder loads wherever a
tokenizer is loaded."""

from selfsup.data import dna_tokenizer  # noqa: F401  (registers its loader)
