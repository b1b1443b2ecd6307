"""Fine-tuning mode: full fine-tuning of the tiny audio tower + a linear head learns separable synthetic classes."""

from __future__ import annotations

import json

from eval import beans

from .test_eval_beans import write_watkins


def test_finetune_learns_separable_classes(tmp_path, saved_model):
    root = tmp_path / "beans"
    write_watkins(root, per_class={"train": 4, "valid": 2, "test": 3})
    out = tmp_path / "out"
    code = beans.main(
        [
            "--model",
            str(saved_model),
            "--beans-root",
            str(root),
            "--out",
            str(out),
            "--tasks",
            "watkins",
            "--mode",
            "finetune",
            "--epochs",
            "6",
            "--lrs",
            "0.01",
            "--train-batch-size",
            "4",
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    result = json.loads((out / "watkins" / "finetune.json").read_text())
    assert result["n"] == {"train": 12, "valid": 6, "test": 9}
    assert len(result["history"]) == 6  # 6 epochs, each scored on the validation split
    best = max(result["history"], key=lambda h: h["valid"])
    assert (result["lr"], result["epoch"], result["valid"]) == (best["lr"], best["epoch"], best["valid"])
    assert result["test"] >= 0.75, result["history"]  # chance is 1/3; measured 8/9
    assert "| ours | finetune |" in (out / "results.md").read_text()
