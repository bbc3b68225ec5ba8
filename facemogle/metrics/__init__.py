"""Metrics: mask consistency, attribute (text) consistency, Fréchet distance and KID, the paper's metrics
(Inception FID/KID, CMMD, CLIP score, DINO structure distance, ImageReward) and the evaluation report."""


class MetricUnavailable(Exception):
    """A metric whose model file or package is missing; the message says what is needed and how to pass it."""
