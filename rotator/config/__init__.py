"""What the operator writes and what is installed: the policy model and its loading, schedules,
the Lambda's policy bundle, the adapter registry (entry points) and the daemon's settings."""
