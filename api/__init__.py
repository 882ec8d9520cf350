"""HTTP: routes, wire format, auth, the error-to-HTTP mapping, gzip bodies."""
