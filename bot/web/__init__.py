"""Web pages the bot serves itself (next to /slack/events, or on the probes port in Socket
Mode): today only the passkey step-up page."""
