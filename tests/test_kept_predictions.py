"""The final evaluation reuses the kept (best) checkpoint's validation logits from its in-training evaluation:
no second validation pass, test predicted once, and the logits equal a fresh prediction with the kept model."""

from __future__ import annotations

import numpy as np
from tiny import quick_run_config

from hf_transfer.run_folder import read_json
from hf_transfer.training import run as training
from hf_transfer.training.kept_predictions import KeptPredictions


def test_final_evaluation_reuses_the_best_checkpoints_validation_logits(tiny_checkpoints, split_image_folder,
                                                                          tmp_path, monkeypatch):
    predicted, checks = [], {}
    original_predict, original_final = training._predict, training.final_evaluation

    def counting_predict(trainer, dataset):
        predicted.append(len(dataset))
        return original_predict(trainer, dataset)

    def checked_final(trainer, prep, **options):
        final = original_final(trainer, prep, **options)
        kept = KeptPredictions.of(trainer).for_kept_model(trainer)
        checks["best_step"], checks["steps"] = trainer.state.best_global_step, trainer.state.global_step
        checks["reused"] = kept is not None and final.evaluations["validation"][0] is kept[0]
        checks["fresh"] = original_predict(trainer, prep.dataset("validation"))  # what the old code computed
        checks["final"] = final.evaluations["validation"]
        return final

    monkeypatch.setattr(training, "_predict", counting_predict)
    monkeypatch.setattr(training, "final_evaluation", checked_final)
    run = quick_run_config(tiny_checkpoints("vit"), split_image_folder, tmp_path / "run", strategy="full",
                           max_steps=4, eval_steps=2)
    result = training.run_training(run)
    sizes = read_json(tmp_path / "run" / "data_report.json")["split_sizes"]
    assert checks["reused"] and checks["best_step"] in (2, 4) and checks["steps"] == 4
    assert predicted == [sizes["test"]]  # the test split once; validation not again
    fresh, final = checks["fresh"], checks["final"]
    np.testing.assert_allclose(final[0], fresh[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(final[1], fresh[1])
    assert abs(final[2] - fresh[2]) < 1e-5
    assert result.metrics["validation"]["eval_loss"] == final[2]


def test_nothing_kept_for_a_step_that_was_not_evaluated():
    class State:
        best_model_checkpoint, best_global_step, global_step = None, None, 5

    class Args:
        load_best_model_at_end = True

    class Prediction:
        predictions, label_ids = (np.ones((3, 2)), np.zeros((3, 4))), np.array([0, 1, 0])

    kept = KeptPredictions()
    metrics = kept.wrap(lambda p: {"accuracy": 1.0})(Prediction())
    assert metrics == {"accuracy": 1.0}
    state = State()
    state.global_step = 4
    kept.on_evaluate(Args(), state, None, metrics={"eval_loss": 0.5})
    trainer = type("T", (), {"state": state, "args": Args()})()
    state.global_step = 5  # trained on after the last evaluation: those logits are stale
    assert kept.for_kept_model(trainer) is None
    state.global_step = 4
    logits, labels, loss = kept.for_kept_model(trainer)
    assert logits.shape == (3, 2) and labels.tolist() == [0, 1, 0] and loss == 0.5
