"""Order processor: the example subscriber that validates and stores NewOrder events.

Run with `python -m order_processor`; settings are in `order_processor.config`, endpoints in
`order_processor.app`.
"""
