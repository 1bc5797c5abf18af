"""carrierflow.analysis."""
