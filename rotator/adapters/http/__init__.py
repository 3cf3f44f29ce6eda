"""The HTTP issuers: InfluxDB 3 Core/Enterprise, InfluxDB v2 and the Management API."""
