"""carrierflow.workflows."""
