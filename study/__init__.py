"""Model study and demo training: ``train_demo`` (the committed demo model), ``make_checkpoint``
(a synthetic checkpoint laid out like a user's), ``eval_particles`` and ``eval_decoding`` (two
evaluations on the KMOU validation split)."""
