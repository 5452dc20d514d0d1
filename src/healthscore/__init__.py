"""healthscore: explainable customer health scores from raw account data."""

__version__ = "0.1.0"
