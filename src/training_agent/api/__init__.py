"""The control plane: a FastAPI app that accepts training requests and reports their progress."""
