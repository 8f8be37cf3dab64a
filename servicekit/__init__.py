"""Small pieces every service of the stack shares: structured logging and the webhook receiver."""
