"""moto server-mode fixture for AWS Secrets Manager (filled in by the AWS work)."""
