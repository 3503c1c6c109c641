"""mimolab's data: the synthetic visual world and the path from records to packed training rows.

``world`` (the generators, ``generate(task, index, seed, difficulty)``), ``schema`` (the JSONL chat
record format: ``write_jsonl``, ``read_jsonl``, ``load_media``), ``samples`` (``data_samples/``),
``sources`` and ``mixture`` (resumable streams and token-share mixtures), ``files`` (your JSONL,
parquet and ``datasets`` directories as sources, prompt files, held-out splits), ``tokenize`` and
``packing`` (records -> token ids with assistant-only labels -> fixed-budget rows), ``pipeline``
(the world's tokenizer, processor and mixture in one place).

Nothing is imported here, so ``import mimolab.data.world`` stays free of torch.
"""
