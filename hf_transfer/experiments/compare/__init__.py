"""Which strategy for this data? Strategies x checkpoints x shot counts x seeds, each cell a real training run.

A *cell* is one (model, strategy, shots, seed): ``hf-transfer train`` with ``--shots-per-class K --shots-seed
SEED`` (the one shot sampler, :func:`hf_transfer.data.sampling.shot_indices`: every strategy of a (shots, seed)
trains on the same images), the same ``--data-seed`` (the same validation split, which picks each run's kept
checkpoint), the same budget (epochs or steps) and each strategy's own default learning rate. Every cell is
its own process (its memory is its own; a crash costs one cell): forked by a fork server that imported the
libraries once, or started through ``accelerate launch`` when the compare itself was launched on several
processes. ``parallel`` cells run at once, each on its own GPU(s) or share of the CPU cores. All cells are
evaluated on the same test split; when the data has none, the compare holds one out of the training split,
stratified, and writes the three splits once as an image folder every cell reads.

Output folder: ``cells/<id>.json`` (each finished cell, written atomically: a killed compare resumes from
them), ``logs/`` (each cell's console), ``runs/<id>/`` (each cell's metrics and summary; weights are
deleted unless ``keep_runs``), ``compare.json`` (``cells`` and ``summary``), ``compare.md`` and
``compare.png``.

The modules, in the order a compare uses them: :mod:`.plan` (settings, cells, data, per-model checks),
:mod:`.runner` (the cells' processes), :mod:`.cell` (a cell's process), :mod:`.report` (statistics,
recommendation, Markdown, plot) and :mod:`.grid` (the whole compare).
"""
