"""The ways rotator runs: the CLI, the daemon, `rotator sync`, the demo and the AWS Lambda
rotation function (its handler and the Secrets Manager rotation protocol)."""
