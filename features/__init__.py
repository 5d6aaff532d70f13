"""Ticket event logs to point-in-time training rows and features (shared by training and serving)."""
