"""Dataset archives without torch: the zip's member listing and the layout rules, shared by the trainer's
gate and the control plane's pre-flight (which runs before any GPU is reserved)."""
