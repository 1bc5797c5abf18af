"""carrierflow.structures."""
