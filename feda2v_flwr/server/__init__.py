"""The server's side of a round, without Flower: the recipe (``recipe.py``: setup, one round's
kept state, checkpoints) over the server step's science (``generator_trainer.py``: generator
training, validation, ``kd`` in ``distillation.py``, fine-tuning; ``class_summary.py``: the
clients' statistics merged per class and drawn from), its state as checkpoint fields
(``trainer_state.py``), the checks that need no training (``checks.py``) and what a run reports
(``run_log.py``). The Flower strategy in ``strategies/`` calls it; nothing here imports Flower's
strategy or the ServerApp."""
