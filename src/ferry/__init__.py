"""Ferry: transformer models on AWS serverless, built, served and kept healthy."""

__version__ = "0.1.0"
