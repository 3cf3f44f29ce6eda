"""The influxctl issuers (management and database tokens) and the influxctl profile store."""
