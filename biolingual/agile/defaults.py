"""The agile head's settings the command line shows in its help, kept apart from the head (which imports
torch) so that `biolingual --help` does not load torch."""

L2_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # pulls toward the seed cross-validation chooses from
DEFAULT_L2 = 0.3  # the pull when the labels cannot be cross-validated (fewer than 2 positives or 2 negatives)
