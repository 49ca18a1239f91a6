"""The inference gateway (OpenAI API in front of deployments) and its usage metering."""
