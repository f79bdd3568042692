"""The parts of :func:`~nopelens.experiments.reproduce`, one module per group of experiments.

Each module holds its parts' ``run`` functions (a :class:`~nopelens.experiments.pipeline.Context`
in, a :class:`~nopelens.experiments.pipeline.PartResult` out) next to the functions that draw their
dashboard figures: :mod:`.random_init` (random-init models, the hyperparameter sweep, the
positional and bidirectional controls, sequence length), :mod:`.mechanism` (first-layer theory and
hook ablations), :mod:`.trained` (models trained on position tasks) and :mod:`.probes` (position
probes). :mod:`.common` has the helpers they share. The ordered table of parts is
:data:`nopelens.experiments.reproduction.PARTS`.
"""
