"""Publisher: the example system's event source, a CLI that sends NewOrder events with the Azure SDK.

Generation (publisher.orders, publisher.events) is pure and seedable; sending (publisher.sending)
takes any object with the SDK client's `send`, so both are testable without a network.
"""
