"""Measurement: ``benchmark`` (this handler against the model's own ceiling and the tutorial's
handler, ``seed_handler``), ``worst_case`` (the largest legal request), ``compare_openvino``,
``tag_corpus_bench`` (the corpus job's ways against the service's own figure, and its memory on
a long input)."""
