"""The ticket store: what the service has seen of every ticket (state, events, scores), in SQL."""
