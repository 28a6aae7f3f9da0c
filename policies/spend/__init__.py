"""Spend: what each team, key and model cost per day, kept durably across replicas."""
