"""The kopf operator: TrainingRun → Job, and Job/Pod state → TrainingRun status, project, agent_logs."""
