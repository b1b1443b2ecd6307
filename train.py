"""Train a BioLingual (CLAP) model on webdataset shards.

    accelerate launch train.py --config configs/base.yaml
    python train.py --config configs/demo.yaml --train.steps 200 --train.lr 3e-4
    python train.py --config configs/base.yaml --resume latest

Any config key can be overridden as --section.key value; see docs/training.md.
"""
from biolingual.training.loop import main

if __name__ == "__main__":
    main()
