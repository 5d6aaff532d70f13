"""Importers: exports of ticketing systems -> the canonical event log (mapping files, ServiceNow)."""
