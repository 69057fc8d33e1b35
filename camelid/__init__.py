"""camelid: an open implementation of the LLaMA system (data, tokenizer, model, training, release, eval)."""

__version__ = "0.1.0"
