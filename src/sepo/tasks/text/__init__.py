"""Text task: real English corpus, tokenizers, learned reward model and independent judges."""
