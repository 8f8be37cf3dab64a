"""Email service: the example subscriber that mails an order confirmation for each NewOrder event.

Run with `python -m email_service`; settings are in `email_service.config`, endpoints in
`email_service.app`.
"""
