"""Detection: Sigma and behavioural rules, anomaly detectors, and the alerts they raise."""
