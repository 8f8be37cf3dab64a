"""Runnable demonstrations of the emulator's behaviour (`make demo-retry`)."""
