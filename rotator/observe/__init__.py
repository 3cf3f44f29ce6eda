"""What operators and auditors see: logs, metrics, health and the status page, notifications,
status, reports, compliance and the token inventory."""
