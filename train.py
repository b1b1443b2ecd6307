"""Train a BioLingual (CLAP) model on webdataset shards.

    accelerate launch train.py --config configs/base.yaml
    python train.py --config configs/demo.yaml --train.steps 200 --train.lr 3e-4
    python train.py --config configs/base.yaml --resume latest

Any config key can be overridden as --section.key value; see docs/training.md.
"""

from biolingual.extras import MissingExtraError


def main(argv: list[str] | None = None) -> dict:
    """biolingual.training.loop's main; without the ``train`` extra, one ``error:`` line naming it
    (the training loop imports accelerate when it is imported) instead of a traceback."""
    try:
        from biolingual.training.loop import main as train
    except MissingExtraError as e:
        raise SystemExit(f"error: {e}") from None
    return train(argv)


if __name__ == "__main__":
    main()
