"""The AWS Secrets Manager store."""
