"""The Slack edge: thin listeners (ack, parse, call the lifecycle, render), pure Block Kit
builders, and the outbound notifier."""
