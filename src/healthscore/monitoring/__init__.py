"""Monitoring: score history and trends, alerts and their delivery, playbooks and
tasks, interventions and their measured effect."""
