"""tvtheory: experiments that check when task arithmetic provably works (Li et al., ICLR 2025)."""

__version__ = "0.1.0"
