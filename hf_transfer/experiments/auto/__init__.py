"""From a folder of images to a trained, published model, every choice explained: ``hf-transfer auto``.

Auto runs named stages in order (:data:`.stages.STAGES`): hold a test split out, rank the candidate checkpoints
by LogME and keep the top k, measure training throughput and cut the plan to the budget, compare the strategies on
the kept candidates over seeds, pick by compare's own recommendation rule, train the final model on all training
data, evaluate it on the held-out test split, write its card, push it, publish its Space. Each stage writes its
result to ``OUT/stages/<name>.json``; ``--resume`` skips the stages already written (and the compare continues
from its finished cells).

Modules: :mod:`.settings` (the options, their help and checks; the default candidates), :mod:`.budget`
(measured throughput, the plan's estimate and its cut), :mod:`.stages` (the stages and the stage list),
:mod:`.report` (auto.json and auto.md) and :mod:`.pipeline` (the whole run).
"""
