"""Direct Bedrock route: Converse / ConverseStream with botocore credentials and SigV4."""

from hybridroute.providers.bedrock.route import DirectBedrockRoute

__all__ = ["DirectBedrockRoute"]
