"""Training Agent: trains torchvision image classifiers for an AutoML system."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("training-agent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

AGENT_NAME = "training_agent"
