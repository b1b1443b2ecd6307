"""Agile modelling over an index: text- or example-seeded active learning, labels that persist, and
classifier heads that ``biolingual detect --head`` applies. The review page (``biolingual review``) is
built on the same API (:class:`AgileSession`)."""
from .head import Head, fit_head
from .labels import Label, LabelStore, Target
from .propose import Proposal, propose
from .raven import import_raven
from .session import AgileSession, FitResult, RankedWindow

__all__ = ["AgileSession", "FitResult", "Head", "Label", "LabelStore", "Proposal", "RankedWindow", "Target", "fit_head",
           "import_raven", "propose"]
