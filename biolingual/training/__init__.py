"""The training loop and its parts (config, schedule, checkpoints, validation); used by train.py."""
