"""Generation backends: vLLM (GPU default, optional extra), transformers (CPU default), OpenAI-compatible."""
